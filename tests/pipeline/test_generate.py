import io

import pytest
import torch
from PIL import Image

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.generate import draw_boxes, greedy, greedy_batch, main, prompt_length
from pipeline.model.qwenvl import save_pretrained
from pipeline.schema import StageConfig
from pipeline.tokens import ENDOFTEXT, IM_END


def test_a_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_model, tiny_batch, tokenizer):
    model = tiny_model.eval()
    eos = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    prompts, pixels, images = [], [], iter(tiny_batch["pixel_values"])
    for row in range(len(tiny_batch["keys"])):
        length = int(tiny_batch["attention_mask"][row].sum())
        labels = tiny_batch["labels"][row, :length].tolist()
        cut = prompt_length(labels) - row  # prompts of different lengths
        prompts.append(tiny_batch["input_ids"][row, :cut].tolist())
        pixels.append(next(images) if tiny_batch["has_image"][row] else None)
    has_image = [p is not None for p in pixels]
    real = torch.stack([p for p in pixels if p is not None])
    batched = greedy_batch(model, prompts, real, has_image, 12, eos, tokenizer.pad_token_id)
    alone = []
    for prompt, image in zip(prompts, pixels, strict=True):
        pixel_values = image[None] if image is not None else real[:0]
        alone.append(greedy(model, torch.tensor(prompt), pixel_values, image is not None, 12, eos))
    assert batched == alone and all(len(a) > 0 for a in alone)
    assert len({len(p) for p in prompts}) == len(prompts)


@pytest.fixture(scope="module")
def export(tiny_model, tokenizer, tmp_path_factory):
    """The tiny model as a stage-3 final/ export."""
    cfg = load_config(
        StageConfig, CONFIG_ROOT / "stage3.yaml", ["model.adapter.num_queries=16", "data.image_size=56"]
    )
    folder = tmp_path_factory.mktemp("export") / "final"
    return save_pretrained(folder, tiny_model.state_dict(), tiny_model.llm.config, tokenizer, cfg)


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


def test_the_cli_answers_a_batch_chats_and_draws(export, tmp_path, capsys, monkeypatch):
    picture = tmp_path / "in.png"
    Image.new("RGB", (80, 60), "red").save(picture)
    out = tmp_path / "drawn.png"
    assert main(["--checkpoint", str(export), "--image", str(picture), "--prompt", "Generate the caption in English:",
                 "--prompt", "What colour is it? Answer:", "--max-new-tokens", "6", "--draw", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("Answer:") == 1 and "Generate the caption" in printed and out.is_file()
    monkeypatch.setattr("sys.stdin", io.StringIO("And its shape?\n"))
    assert main(["--checkpoint", str(export), "--image", str(picture), "--chat", "--prompt", "What is this?",
                 "--max-new-tokens", "6", "--temperature", "0.7", "--top-p", "0.9"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("assistant: ") == 2 and "user: And its shape?" in printed
