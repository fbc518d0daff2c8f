"""Ground-truth text for every Qwen-VL task, derived from a scene; plus the text noise kinds."""

from __future__ import annotations

import random

from data_prep.synthetic.scene import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    normalise_box,
    normalise_points,
)
from pipeline.data.shard_format import box_text

SYSTEM_PROMPT = "You are a helpful assistant."
BG_KIND_EN = {"plain": "plain", "gradient": "shaded", "striped": "striped", "noisy": "speckled"}


# ---------------------------------------------------------------- English and Chinese descriptions
def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(obj: Obj) -> str:
    words = f"{obj.size} {obj.colour} {obj.shape}"
    return f"{article(words)} {words}"


def count_by(objects: list[Obj], attribute: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in objects:
        counts[getattr(o, attribute)] = counts.get(getattr(o, attribute), 0) + 1
    return counts


def join_en(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def relation(a: Obj, b: Obj, scene: Scene) -> str:
    """Dominant spatial relation of a to b: 'left of', 'right of', 'above' or 'below'."""
    dx = (a.centre[0] - b.centre[0]) / scene.width
    dy = (a.centre[1] - b.centre[1]) / scene.height
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


REL_EN = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
REL_ZH = {"left of": "左边", "right of": "右边", "above": "上面", "below": "下面"}


def caption_en(scene: Scene, rng: random.Random) -> str:
    objs = join_en([describe(o) for o in scene.objects])
    bg = f"{BG_KIND_EN[scene.background_kind]} {scene.background} background"
    template = rng.choice(
        ("{O} on a {B}.", "A picture of {o} on a {B}.", "An image showing {o} against a {B}.")
    )
    text = template.format(O=objs[0].upper() + objs[1:], o=objs, B=bg)
    if len(scene.objects) >= 2:
        a, b = scene.objects[0], scene.objects[1]
        text += f" The {a.colour} {a.shape} is {REL_EN[relation(a, b, scene)]} the {b.colour} {b.shape}."
    if scene.words:
        quoted = join_en([f'"{w.text}"' for w in scene.words])
        text += f" The word{'s' if len(scene.words) > 1 else ''} {quoted} {'are' if len(scene.words) > 1 else 'is'} written on it."
    return text


def describe_zh(obj: Obj, with_size: bool = True) -> str:
    size = SIZES[obj.size][1] + ("的" if obj.size != "medium" else "") if with_size else ""
    return f"{size}{COLOURS[obj.colour][1]}{SHAPES[obj.shape]}"


def caption_zh(scene: Scene, rng: random.Random) -> str:
    items = ["一个" + describe_zh(o) for o in scene.objects]
    objs = items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]
    text = f"{BACKGROUNDS[scene.background][1]}背景上有{objs}。"
    if len(scene.objects) >= 2:
        a, b = scene.objects[0], scene.objects[1]
        text += f"{describe_zh(a, False)}在{describe_zh(b, False)}的{REL_ZH[relation(a, b, scene)]}。"
    if scene.words:
        text += "图中写着" + "和".join(f"“{w.text}”" for w in scene.words) + "。"
    return text


# ---------------------------------------------------------------- tasks
def vqa(scene: Scene, rng: random.Random) -> list[dict]:
    objs = scene.objects
    n = len(objs)
    pairs = [{"type": "count", "question": "How many shapes are there in the image?", "answer": str(n)}]
    shape_counts, colour_counts = count_by(objs, "shape"), count_by(objs, "colour")
    shape = rng.choice(list(SHAPES))
    pairs.append(
        {
            "type": "count",
            "question": f"How many {shape}s are there?",
            "answer": str(shape_counts.get(shape, 0)),
        }
    )
    unique_shape = [o for o in objs if shape_counts[o.shape] == 1]
    if unique_shape:
        o = rng.choice(unique_shape)
        pairs.append({"type": "colour", "question": f"What colour is the {o.shape}?", "answer": o.colour})
    unique_colour = [o for o in objs if colour_counts[o.colour] == 1]
    if unique_colour:
        o = rng.choice(unique_colour)
        pairs.append(
            {"type": "shape", "question": f"What shape is the {o.colour} object?", "answer": o.shape}
        )
    if n >= 2:
        a, b = rng.sample(objs, 2)
        dx = (a.centre[0] - b.centre[0]) / scene.width
        if abs(dx) > 0.1:  # only ask where the answer is clear
            answer = "yes" if dx < 0 else "no"
            q = f"Is the {a.colour} {a.shape} to the left of the {b.colour} {b.shape}?"
            pairs.append({"type": "position", "question": q, "answer": answer})
    present = {(o.colour, o.shape) for o in objs}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:
        colour, shape = rng.choice([(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present])
    answer = "yes" if (colour, shape) in present else "no"
    pairs.append(
        {
            "type": "yesno",
            "question": f"Is there {article(colour)} {colour} {shape} in the image?",
            "answer": answer,
        }
    )
    return pairs


def referring(scene: Scene, rng: random.Random) -> list[dict]:
    shape_counts = count_by(scene.objects, "shape")
    refs = []
    for o in scene.objects:
        if shape_counts[o.shape] == 1 and rng.random() < 0.5:
            expression = f"the {o.shape}"
        elif rng.random() < 0.3:
            expression = f"the {o.size} {o.colour} {o.shape}"
        else:
            expression = f"the {o.colour} {o.shape}"  # (colour, shape) is unique in a scene
        refs.append({"expression": expression, "box": normalise_box(o.box, scene.width, scene.height)})
    return refs


def grounded_caption(scene: Scene) -> str:
    names = [describe(o) for o in scene.objects]
    names[0] = names[0][0].upper() + names[0][1:]  # the sentence starts inside the first <ref>
    parts = [
        f"<ref>{name}</ref><box>{box_text(normalise_box(o.box, scene.width, scene.height))}</box>"
        for name, o in zip(names, scene.objects, strict=True)
    ]
    return join_en(parts) + f" on a {scene.background} background."


def ocr(scene: Scene) -> list[dict]:
    return [
        {"text": w.text, "quad": normalise_points(w.quad, scene.width, scene.height)} for w in scene.words
    ]


def image_dialogue(scene: Scene, caption: str, qa: list[dict], rng: random.Random) -> list[dict]:
    turns = rng.sample(qa, k=min(len(qa), rng.randint(1, 2)))
    exchanges = [("Describe the image.", caption)] + [(t["question"], _sentence_answer(t)) for t in turns]
    rng.shuffle(exchanges)
    messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i, (question, answer) in enumerate(exchanges):
        content = [{"type": "image"}, {"type": "text", "text": question}] if i == 0 else question
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]
    return messages


def _sentence_answer(qa: dict) -> str:
    answer = qa["answer"]
    return answer[0].upper() + answer[1:] + "."


# ---------------------------------------------------------------- pure text and text-only dialogues
FACTS = [
    ("How many sides does a triangle have?", "A triangle has three sides and three corners."),
    ("How many sides does a square have?", "A square has four sides of equal length."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("Does a circle have corners?", "No. A circle has no corners and no straight sides."),
    ("What is a diamond shape?", "A diamond is a square turned so that it stands on one corner."),
    ("How many points does a star have?", "The stars in these pictures have five points."),
    ("What does a cross look like?", "A cross is made of two bars that meet in the middle."),
    ("What do red and yellow make?", "Mixing red and yellow gives orange."),
    ("What do blue and yellow make?", "Mixing blue and yellow gives green."),
    ("What do red and blue make?", "Mixing red and blue gives purple."),
    ("What do red and white make?", "Mixing red and white gives pink."),
    ("Which colour is the darkest?", "Black is the darkest colour and white is the lightest."),
    (
        "What is a box in a grounding answer?",
        "A box gives the top-left and bottom-right corners, scaled to 0-1000.",
    ),
    ("What does OCR mean?", "OCR means reading the words that are written in an image."),
]
FACTS_ZH = [
    "三角形有三条边和三个角。", "正方形的四条边一样长。", "六边形有六条边。", "圆形没有角。",
    "红色和黄色混合成橙色。", "蓝色和黄色混合成绿色。", "红色和蓝色混合成紫色。", "黑色是最深的颜色。",
]  # fmt: skip


def pure_text(rng: random.Random, chinese: bool) -> str:
    if chinese:
        return "".join(rng.sample(FACTS_ZH, k=rng.randint(2, 5)))
    return " ".join(a for _, a in rng.sample(FACTS, k=rng.randint(2, 5)))


def text_dialogue(rng: random.Random) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for question, answer in rng.sample(FACTS, k=rng.randint(1, 3)):
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages


# ---------------------------------------------------------------- noise: other languages, junk
# language -> (template, item template, joiner, colours, shapes); long sentences help language ID
OTHER_LANGUAGES: dict[str, tuple[str, str, str, list[str], list[str]]] = {
    "fr": ("Une photo qui montre {items}, posés sur un fond uni et très simple.", "la forme {s} de couleur {c}", " et ",
           ["rouge", "vert", "bleu", "jaune", "orange", "violet", "rose", "blanc", "noir"],
           ["cercle", "carré", "triangle", "étoile", "losange", "hexagone", "croix"]),
    "de": ("Ein Bild mit {items} auf einem einfachen und ruhigen Hintergrund.", "der Form {s} in der Farbe {c}", " und ",
           ["rot", "grün", "blau", "gelb", "orange", "lila", "rosa", "weiß", "schwarz"],
           ["Kreis", "Quadrat", "Dreieck", "Stern", "Raute", "Sechseck", "Kreuz"]),
    "es": ("Una fotografía que muestra {items} sobre un fondo sencillo y tranquilo.", "la figura {s} de color {c}", " y ",
           ["rojo", "verde", "azul", "amarillo", "naranja", "morado", "rosa", "blanco", "negro"],
           ["círculo", "cuadrado", "triángulo", "estrella", "rombo", "hexágono", "cruz"]),
    "ru": ("На этой картинке изображены {items} на простом светлом фоне.", "фигура {s} цвета {c}", " и ",
           ["красный", "зелёный", "синий", "жёлтый", "оранжевый", "фиолетовый", "розовый", "белый", "чёрный"],
           ["круг", "квадрат", "треугольник", "звезда", "ромб", "шестиугольник", "крест"]),
    "ja": ("この画像には{items}が描かれています。", "{c}{s}", "と",
           ["赤い", "緑の", "青い", "黄色い", "オレンジの", "紫の", "ピンクの", "白い", "黒い"],
           ["まる", "しかく", "さんかく", "ほし", "ひしがた", "ろっかくけい", "じゅうじ"]),
    "ko": ("이 사진에는 {items}이 단순한 배경 위에 그려져 있습니다.", "{c} {s}", "과 ",
           ["빨간색", "초록색", "파란색", "노란색", "주황색", "보라색", "분홍색", "흰색", "검은색"],
           ["원", "정사각형", "삼각형", "별", "마름모", "육각형", "십자가"]),
    "ar": ("صورة تحتوي على {items} فوق خلفية بسيطة وهادئة.", "{s} {c}", " و",
           ["أحمر", "أخضر", "أزرق", "أصفر", "برتقالي", "بنفسجي", "وردي", "أبيض", "أسود"],
           ["دائرة", "مربع", "مثلث", "نجمة", "معين", "سداسي", "صليب"]),
}  # fmt: skip


def caption_other(scene: Scene, language: str) -> str:
    template, item, joiner, colours, shapes = OTHER_LANGUAGES[language]
    colour_index, shape_index = list(COLOURS), list(SHAPES)
    items = [
        item.format(c=colours[colour_index.index(o.colour)], s=shapes[shape_index.index(o.shape)])
        for o in scene.objects
    ]
    return template.format(items=joiner.join(items))


# Junk that a caption cleaner removes entirely: HTML tags and entities, URLs, e-mails, file names,
# runs of symbols. It sits at word boundaries, so stripping it and collapsing whitespace gives back
# the clean caption exactly.
JUNK_PREFIX = [
    "<p>",
    '<div class="caption">',
    "<span>",
    "&nbsp;",
    "IMG_{n}.JPG",
    "DSC{n}.jpg",
    "|||",
    "***",
    "###",
]
JUNK_SUFFIX = ["</p>", "</div>", "<br/>", "&nbsp;&nbsp;", "&#160;", "https://cdn{n}.example.com/i/{n}.jpg",
               "www.example{n}.com", "info{n}@example.com", "|||", "~~~", "==="]  # fmt: skip


def _junk(rng: random.Random, pool: list[str]) -> str:
    return rng.choice(pool).format(n=rng.randint(1000, 99999))


def html_junk(caption: str, rng: random.Random) -> str:
    words = caption.split(" ")
    plain = [i for i, w in enumerate(words) if w.isalpha()]
    if plain and rng.random() < 0.7:
        i = rng.choice(plain)
        tag = rng.choice(("b", "i", "em", "strong"))
        words[i] = f"<{tag}>{words[i]}</{tag}>"
    prefix = " ".join(_junk(rng, JUNK_PREFIX) for _ in range(rng.randint(1, 2)))
    suffix = " ".join(_junk(rng, JUNK_SUFFIX) for _ in range(rng.randint(1, 3)))
    return f"{prefix} {' '.join(words)} {suffix}"


def empty_junk(rng: random.Random) -> str:
    pieces = [_junk(rng, JUNK_PREFIX + JUNK_SUFFIX) for _ in range(rng.randint(2, 5))]
    return " ".join(pieces)
