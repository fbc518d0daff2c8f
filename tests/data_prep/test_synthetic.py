import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from data_prep.synthetic import NOISE_KINDS, NoiseRates, WorldConfig, generate, plan_sample
from data_prep.synthetic.__main__ import config_from_args, main, parse_args
from data_prep.synthetic.render import render
from data_prep.synthetic.scene import COLOURS, SHAPES
from data_prep.synthetic.world import image_bytes


def read_world(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*/*.json"))}


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "world.json"
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate(WorldConfig(num_samples=300, seed=3), out, progress=False)
    return out


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    a, b, c = (generate(WorldConfig(num_samples=40, seed=s), tmp_path / n, progress=False) for n, s in
               (("a", 7), ("b", 7), ("c", 8)))  # fmt: skip
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    ta, tc = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "c")
    differing = [k for k in ta if k.endswith(".jpg") and ta[k] != tc.get(k)]
    assert len(differing) >= 38


def test_noise_rates_within_two_points_on_5000():
    rates = NoiseRates(mismatch=0.1, aspect=0.04, small=0.04, language=0.08, html=0.06, empty=0.03, duplicate=0.05,
                       corrupt=0.03)  # fmt: skip
    cfg = WorldConfig(num_samples=5000, seed=11, noise=rates)
    labels = [plan_sample(cfg, i).noise for i in range(5000)]
    for kind in NOISE_KINDS:
        share = labels.count(kind) / len(labels)
        assert abs(share - getattr(rates, kind)) <= 0.02, (kind, share)
    zh = sum(plan_sample(cfg, i).tasks.get("caption_zh") is not None for i in range(0, 5000, 5)) / 1000
    assert abs(zh - 0.23) <= 0.03


def test_zero_noise_is_all_clean():
    cfg = WorldConfig(num_samples=200, noise=NoiseRates(**dict.fromkeys(NOISE_KINDS, 0.0)))
    assert {plan_sample(cfg, i).noise for i in range(200)} == {"clean"}


def test_every_task_present_and_consistent(world):
    samples = read_world(world)
    clean = [m for m in samples.values() if m["noise"] == "clean"]
    assert len(clean) > 150
    with_words = 0
    for m in clean:
        w, h, tasks = m["width"], m["height"], m["tasks"]
        objects = m["scene"]["objects"]
        image = np.asarray(Image.open(_path(world, m["key"])).convert("RGB")).astype(int)
        assert image.shape[:2] == (h, w)
        assert tasks["caption_en"] and tasks["grounded_caption"] and tasks["vqa"] and tasks["dialogue"]
        assert ("caption_zh" in tasks) == (m["lang"] == "zh")
        assert (Path(_path(world, m["key"])).with_suffix(".txt")).read_text() == m["caption"]
        # boxes inside the image, in [0, 1000), one per object, object colour at the box centre
        assert len(tasks["ref"]) == len(objects)
        for obj, ref in zip(objects, tasks["ref"], strict=True):
            x1, y1, x2, y2 = obj["box"]
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert all(0 <= v < 1000 for v in ref["box"])
            assert abs(ref["box"][0] - x1 / w * 1000) <= 1 and abs(ref["box"][3] - y2 / h * 1000) <= 1
            pixel = image[(y1 + y2) // 2, (x1 + x2) // 2]
            assert np.abs(pixel - COLOURS[obj["colour"]][0]).sum() < 90, (m["key"], obj)
            assert obj["shape"] in ref["expression"]
            assert (
                f"<ref>a{'n' if obj['size'][0] in 'aeiou' else ''} {obj['size']} {obj['colour']} {obj['shape']}</ref>"
                in tasks["grounded_caption"].replace("<ref>A", "<ref>a", 1)
            )
        assert tasks["grounded_caption"].startswith(
            "<ref>A"
        )  # a sentence: capitalised inside its first <ref>
        # VQA answers follow from the objects
        for qa in tasks["vqa"]:
            q, a = qa["question"], qa["answer"]
            if q == "How many shapes are there in the image?":
                assert a == str(len(objects))
            elif qa["type"] == "count":
                shape = re.match(r"How many (\w+)s are there\?", q).group(1)
                assert a == str(sum(o["shape"] == shape for o in objects))
            elif qa["type"] == "colour":
                shape = re.match(r"What colour is the (\w+)\?", q).group(1)
                assert [o["colour"] for o in objects if o["shape"] == shape] == [a]
            elif qa["type"] == "shape":
                colour = re.match(r"What shape is the (\w+) object\?", q).group(1)
                assert [o["shape"] for o in objects if o["colour"] == colour] == [a]
            elif qa["type"] == "yesno":
                colour, shape = re.match(r"Is there an? (\w+) (\w+) in the image\?", q).groups()
                assert a == (
                    "yes" if any(o["colour"] == colour and o["shape"] == shape for o in objects) else "no"
                )
        # OCR quads cover the rendered words
        assert len(tasks["ocr"]) == len(m["scene"]["words"])
        with_words += bool(tasks["ocr"])
        for word in tasks["ocr"]:
            assert word["text"].isupper() and len(word["quad"]) == 4
            assert all(0 <= v < 1000 for point in word["quad"] for v in point)
        # the dialogue is ChatML-ready: system first, user/assistant alternating, image in the first user turn
        roles = [t["role"] for t in tasks["dialogue"]]
        assert roles[0] == "system" and roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
        assert tasks["dialogue"][1]["content"][0] == {"type": "image"}
    assert 0.15 < with_words / len(clean) < 0.45


def _path(world: Path, key: str) -> Path:
    return next(world.glob(f"*/{key}.jpg"))


def test_ocr_quads_contain_the_word_pixels():
    cfg = WorldConfig(num_samples=400, seed=5, word_rate=1.0)
    checked = 0
    for i in range(400):
        plan = plan_sample(cfg, i)
        if plan.noise != "clean" or not plan.scene.words:
            continue
        with_words = np.asarray(render(plan.scene)).astype(int)
        plan.scene.words, words = [], plan.scene.words
        without = np.asarray(render(plan.scene)).astype(int)
        changed = np.abs(with_words - without).sum(-1) > 60
        mask = Image.new("L", (plan.scene.width, plan.scene.height), 0)
        for word in words:
            ImageDraw.Draw(mask).polygon([tuple(p) for p in word.quad], fill=255)
        inside = changed & (np.asarray(mask.filter(ImageFilter.MaxFilter(3))) > 0)  # 1 px tolerance
        assert changed.sum() > 20
        assert inside.sum() / changed.sum() > 0.99, (i, inside.sum() / changed.sum())
        checked += 1
        if checked == 25:
            break
    assert checked == 25


JUNK = [
    r"<[^>]+>",
    r"&(nbsp|#160);",
    r"https?://\S+",
    r"www\.\S+",
    r"\S+@\S+",
    r"\b\w+\.(jpe?g|JPE?G)\b",
    r"[|*#~=]{3,}",
]


def reference_clean(text: str) -> str:
    for pattern in JUNK:
        text = re.sub(pattern, " ", text)
    return re.sub(r"\s+", " ", text).strip()


def test_noise_is_what_its_label_says(world):
    samples = read_world(world)
    by_noise = {k: [m for m in samples.values() if m["noise"] == k] for k in NOISE_KINDS}
    assert all(by_noise[k] for k in NOISE_KINDS), {k: len(v) for k, v in by_noise.items()}
    for m in by_noise["aspect"]:
        assert max(m["width"], m["height"]) / min(m["width"], m["height"]) >= 3.4
    for m in by_noise["small"]:
        assert max(m["width"], m["height"]) <= 80
    for m in samples.values():
        if m["noise"] not in ("aspect", "small"):
            assert (
                min(m["width"], m["height"]) >= 200
                and max(m["width"], m["height"]) / min(m["width"], m["height"]) <= 2.2
            )
    for m in by_noise["corrupt"]:
        with pytest.raises(OSError):  # truncated, or not an image at all
            Image.open(io.BytesIO(_path(world, m["key"]).read_bytes())).load()
    for m in samples.values():
        if m["noise"] != "corrupt":
            Image.open(_path(world, m["key"])).load()
    for m in by_noise["duplicate"]:
        source = samples[m["duplicate_of"]]
        assert source["noise"] == "clean" and int(source["key"]) < int(m["key"])
        assert _path(world, m["key"]).read_bytes() == _path(world, source["key"]).read_bytes()
        assert m["caption"] == source["caption"]
    for m in by_noise["mismatch"]:
        names = {
            (c, s): f"{COLOURS[c][1]}{SHAPES[s]}" if m["lang"] == "zh" else f"{c} {s}"
            for c in COLOURS
            for s in SHAPES
        }
        named = {pair for pair, name in names.items() if name in m["caption"]}
        assert named and named.isdisjoint({(o["colour"], o["shape"]) for o in m["scene"]["objects"]})
    for m in by_noise["language"]:
        assert m["lang"] not in ("en", "zh") and m["caption"] != m["clean_caption"]
        assert "background" not in m["caption"] and not any(
            f"{c} {s}" in m["caption"] for c in COLOURS for s in SHAPES
        )
    for m in by_noise["html"]:
        assert m["caption"] != m["clean_caption"] and reference_clean(m["caption"]) == m["clean_caption"]
    for m in by_noise["empty"]:
        assert m["caption"].strip() and reference_clean(m["caption"]) == "" and m["clean_caption"] == ""
    for m in samples.values():
        if m["noise"] in ("clean", "html"):
            assert reference_clean(m["clean_caption"]) == m["clean_caption"]


def test_text_only_samples_and_summary(world):
    lines = [json.loads(line) for line in (world / "text.jsonl").read_text().splitlines()]
    assert len(lines) == 30
    kinds = {s["kind"] for s in lines}
    assert kinds == {"text", "dialogue"}
    for s in lines:
        if s["kind"] == "dialogue":
            assert s["messages"][0]["role"] == "system" and all(
                isinstance(t["content"], str) for t in s["messages"]
            )
        else:
            assert len(s["text"]) > 10
    summary = json.loads((world / "world.json").read_text())
    labels = [m["noise"] for m in read_world(world).values()]
    assert summary["noise_counts"] == {k: labels.count(k) for k in sorted(set(labels))}
    assert sum(summary["languages"].values()) == summary["num_pairs"] == 300
    with Image.open(world / "preview.png") as preview:  # the contact sheet: 8 clean + one per noise kind
        assert preview.width > 600 and preview.height > 600


def test_heldout_split_is_disjoint_and_clean():
    args = parse_args(["--out", "unused", "--split", "heldout", "--num-samples", "100"])
    heldout = config_from_args(args)
    train = WorldConfig(num_samples=100)
    assert {plan_sample(heldout, i).noise for i in range(100)} == {"clean"}
    train_images = {image_bytes(train, plan_sample(train, i)) for i in range(60)}
    heldout_images = {image_bytes(heldout, plan_sample(heldout, i)) for i in range(60)}
    assert train_images.isdisjoint(heldout_images)


def test_cli_writes_world_and_rejects_bad_noise(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--num-samples", "12", "--seed", "2", "--quiet"]) == 0
    assert len(list(tmp_path.glob("*/*.jpg"))) == 12
    assert json.loads(capsys.readouterr().out)["num_pairs"] == 12
    with pytest.raises(SystemExit, match="KIND=RATE"):
        config_from_args(parse_args(["--out", "x", "--noise", "typo=0.1"]))
    with pytest.raises(SystemExit, match="add up to"):
        config_from_args(parse_args(["--out", "x", "--noise", "mismatch=0.9", "--noise", "html=0.5"]))


def test_max_objects_bounds_every_scene_and_leaves_the_default_world_as_it_was():
    plans = [plan_sample(WorldConfig(num_samples=200, max_objects=1), i) for i in range(200)]
    assert {len(p.scene.objects) for p in plans} == {1}
    assert all(len(p.tasks["ref"]) == 1 for p in plans)  # one object: one referring expression, its box
    # the default world is the one drawn before max_objects existed (digest computed at adb8467)
    default = WorldConfig(num_samples=200)
    drawn = repr([(p.caption, p.tasks["ref"]) for p in (plan_sample(default, i) for i in range(50))])
    assert hashlib.sha256(drawn.encode()).hexdigest()[:16] == "196f033a194872a2"
    assert max(len(plan_sample(default, i).scene.objects) for i in range(200)) == 4
    assert config_from_args(parse_args(["--out", "x", "--max-objects", "2"])).max_objects == 2
    with pytest.raises(SystemExit, match="max_objects must be >= 1"):
        config_from_args(parse_args(["--out", "x", "--max-objects", "0"]))
