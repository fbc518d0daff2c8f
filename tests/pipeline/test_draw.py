from PIL import Image

from pipeline.draw import draw_boxes


def test_boxes_in_an_answer_are_drawn_where_they_point():
    image = Image.new("RGB", (200, 100), "white")
    drawn = draw_boxes(
        image, "<|object_ref_start|>the circle<|object_ref_end|><|box_start|>(100,200),(500,800)<|box_end|>"
    )
    assert drawn.getpixel((20, 50)) == (255, 0, 0)  # the left edge: x 100/1000 of 200 px
    assert drawn.getpixel((60, 50)) == (255, 255, 255) and image.getpixel((20, 50)) == (255, 255, 255)


def test_a_box_with_its_corners_swapped_is_drawn_not_refused():
    image = Image.new("RGB", (200, 100), "white")
    drawn = draw_boxes(image, "<|box_start|>(500,800),(100,200)<|box_end|>")
    assert drawn.getpixel((20, 50)) == (255, 0, 0)
