import io
import json

import pytest
import torch
import webdataset as wds

from data_prep.synthetic.shards import world_samples, write_shards
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.data.shards import epoch_shards
from pipeline.model.vision import image_transform
from pipeline.schema import DataConfig, VisionConfig
from pipeline.tokens import IGNORE
from tests.shards import write_tar

SIZE = 56  # a 4x4 patch grid keeps the tests fast; the loader does not care
STAGE2 = {"caption": 19.7, "vqa": 3.6, "grounded_caption": 12.2, "ref": 8.7, "ocr": 24.8, "text": 7.8}


def loader(
    shards,
    tokenizer,
    rank=0,
    world_size=1,
    workers=0,
    tasks=None,
    seed=0,
    batch=2,
    max_length=512,
    group=1,
    packing=False,
):
    cfg = DataConfig(shards=shards, tasks=tasks or STAGE2, image_size=SIZE, num_workers=workers,
                     group_by_length=group, max_length=max_length, packing=packing)  # fmt: skip
    fmt = Formatter(tokenizer, num_queries=16, max_length=max_length)
    return build_loader(cfg, fmt, image_transform(VisionConfig(), SIZE), batch, seed, rank, world_size)


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a: dict, b: dict) -> bool:
    return (
        a["keys"] == b["keys"]
        and a["tasks"] == b["tasks"]
        and all(
            torch.equal(a[k], b[k])
            for k in ("input_ids", "labels", "attention_mask", "pixel_values", "has_image")
        )
    )


@pytest.mark.parametrize(
    ("world_size", "workers", "group"), [(1, 2, 1), (2, 0, 1), (2, 2, 1), (2, 2, 4), (1, 0, 4)]
)
def test_restored_loader_continues_exactly(world_shards, tokenizer, world_size, workers, group):
    for rank in range(world_size):  # 41 batches: with grouping, every worker stops inside a window
        reference = loader(world_shards, tokenizer, rank, world_size, workers, group=group)
        uninterrupted = take(iter(reference), 48)
        first = loader(world_shards, tokenizer, rank, world_size, workers, group=group)
        it = iter(first)
        assert all(same(a, b) for a, b in zip(take(it, 41), uninterrupted[:41], strict=True))
        state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
        restored = loader(world_shards, tokenizer, rank, world_size, workers, group=group)
        restored.load_state_dict(state)
        after = take(iter(restored), 7)
        assert all(same(a, b) for a, b in zip(after, uninterrupted[41:], strict=True)), f"rank {rank}"
        assert restored.stats() == reference.stats()  # the counts carry over too


def test_a_worker_sends_the_batches_the_loader_makes_inline(world_shards, tokenizer):
    # one worker reads slot 0 of 1, as the inline loader does; its small tensors cross as pickled arrays
    inline, sent = (take(iter(loader(world_shards, tokenizer, workers=w)), 3) for w in (0, 1))
    assert all(same(a, b) for a, b in zip(inline, sent, strict=True))
    assert all(
        b[k].dtype == a[k].dtype
        for a, b in zip(inline, sent, strict=True)
        for k in a
        if torch.is_tensor(a[k])
    )


def padding(batches) -> float:
    return sum(int((b["attention_mask"] == 0).sum()) for b in batches) / sum(
        b["attention_mask"].numel() for b in batches
    )


def images_by_key(batch) -> dict:
    keys = [k for k, has in zip(batch["keys"], batch["has_image"], strict=True) if has]
    return dict(zip(keys, batch["pixel_values"], strict=True))


def test_grouping_by_length_reorders_a_window_and_cuts_padding(world_shards, tokenizer):
    plain = take(iter(loader(world_shards, tokenizer, batch=4)), 24)
    grouped = take(iter(loader(world_shards, tokenizer, batch=4, group=8)), 24)
    for window in range(3):  # the same samples per window of 8 batches, each with its own image
        a, b = plain[8 * window : 8 * window + 8], grouped[8 * window : 8 * window + 8]
        assert sorted(k for x in a for k in x["keys"]) == sorted(k for x in b for k in x["keys"])
        pixels = {k: p for x in a for k, p in images_by_key(x).items()}
        assert all(torch.equal(pixels[k], p) for x in b for k, p in images_by_key(x).items())
    assert [x["keys"] for x in grouped[:8]] != [x["keys"] for x in plain[:8]]
    assert padding(grouped) < 0.5 * padding(plain), (padding(grouped), padding(plain))


def test_ranks_read_different_samples_and_seeds_change_the_order(world_shards, tokenizer):
    keys = [
        sum((b["keys"] for b in take(iter(loader(world_shards, tokenizer, r, 2)), 10)), []) for r in (0, 1)
    ]
    assert not set(keys[0]) & set(keys[1])
    reseeded = sum((b["keys"] for b in take(iter(loader(world_shards, tokenizer, 0, 2, seed=1)), 10)), [])
    assert reseeded != keys[0]


def test_every_slot_gets_the_same_number_of_shards_and_an_epoch_covers_all():
    urls = [f"s{i}" for i in range(9)]
    for slots in (1, 2, 4, 9, 12):
        lists = [epoch_shards(urls, 0, 3, s, slots) for s in range(slots)]
        assert {len(x) for x in lists} == {-(-9 // slots)}
        assert set(sum(lists, [])) == set(urls)
    assert epoch_shards(urls, 0, 0, 0, 1) != epoch_shards(urls, 0, 1, 0, 1)  # reshuffled per epoch


def test_more_slots_than_shards_never_starve_a_rank(tmp_path, tokenizer):
    shards = write_shards(world_samples(30, 0), tmp_path, per_shard=12)  # 3 shards of 12, 12, 6
    for rank in range(2):  # 2 ranks x 2 workers = 4 slots
        batches = take(iter(loader(shards, tokenizer, rank, 2, workers=2, tasks={"caption": 1})), 30)
        assert len(batches) == 30


def test_batches_are_right_padded_with_normalised_images(world_shards, tokenizer):
    for batch in take(iter(loader(world_shards, tokenizer, batch=4)), 10):
        mask = batch["attention_mask"].bool()
        lengths = mask.sum(1)
        assert torch.equal(mask, torch.arange(mask.shape[1]) < lengths[:, None])  # pads only at the end
        assert (batch["labels"][~mask] == IGNORE).all()
        assert (batch["input_ids"][~mask] == tokenizer.pad_token_id).all()
        # the real images only: text-only rows send no blank
        assert batch["pixel_values"].shape == (int(batch["has_image"].sum()), 3, SIZE, SIZE)
        assert batch["pixel_values"].abs().amax() > 1.0  # normalised with the CLIP mean/std, not in [0, 1]


def test_stage2_mix_draws_every_task(world_shards, tokenizer):
    it = loader(world_shards, tokenizer, batch=8)
    tasks = sum((b["tasks"] for b in take(iter(it), 25)), [])
    assert set(tasks) == set(STAGE2)
    assert it.stats()["tasks"] == {t: tasks.count(t) for t in sorted(set(tasks))}


def _jpeg(colour) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_bad_samples_are_skipped_and_counted_by_reason(tmp_path, tokenizer):
    good = {"lang": "en"}
    samples = [
        {"__key__": f"g{i}", "jpg": _jpeg("red"), "txt": "A red image.", "json": good} for i in range(6)
    ]
    samples += [
        {"__key__": "corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": "x", "json": good},
        {"__key__": "badjson", "jpg": _jpeg("blue"), "txt": "x", "json": b"{not json"},
        {"__key__": "textonly", "json": {"text": "No image here."}},
        {"__key__": "nocaption", "jpg": _jpeg("green"), "json": good},
    ]
    with wds.TarWriter(str(tmp_path / "0.tar")) as w:
        for s in samples:
            w.write(s)
    data = (tmp_path / "0.tar").read_bytes()
    (tmp_path / "1.tar").write_bytes(data[: len(data) // 2 + 100])  # a shard cut off mid-file
    it = loader(str(tmp_path / "{0..1}.tar"), tokenizer, tasks={"caption": 1.0}, batch=3)
    batches = take(iter(it), 12)  # a few epochs of the 6 good samples
    assert all(k.startswith("g") for b in batches for k in b["keys"])
    skipped = it.stats()["skipped"]
    assert skipped["decode_error"] >= 1 and skipped["bad_metadata"] >= 1 and skipped["no_task"] >= 2
    assert skipped["shard_error"] >= 1


def test_a_leading_assistant_turn_is_dropped_and_counted(tmp_path, tokenizer):
    opener = {"role": "assistant", "content": "Hi, what can I do for you?"}
    turns = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."}]
    samples = [
        {"__key__": f"d{i}", "json": {"messages": ([opener] if i % 2 else []) + turns}} for i in range(8)
    ]
    with wds.TarWriter(str(tmp_path / "0.tar")) as w:
        for s in samples:
            w.write(s)
    it = loader(str(tmp_path / "0.tar"), tokenizer, tasks={"chatml": 1.0}, batch=4)
    batches = take(iter(it), 2)
    openers = sum(int(k[1:]) % 2 for b in batches for k in b["keys"])
    assert it.stats()["dropped_turns"] == {"chatml": openers} and openers > 0
    assert it.stats()["skipped"] == {}


def test_a_repeated_member_skips_one_sample_and_the_shard_goes_on(tmp_path, tokenizer):
    members = []
    for i in range(6):
        members += [(f"s{i}.jpg", _jpeg("red")), (f"s{i}.txt", b"A red image.")]
        if i == 1:
            members.append((f"s{i}.jpg", _jpeg("blue")))  # s1 has two images of one name
    write_tar(tmp_path / "0.tar", members)
    it = loader(str(tmp_path / "0.tar"), tokenizer, tasks={"caption": 1.0}, batch=5)
    keys = [k for b in take(iter(it), 6) for k in b["keys"]]  # 6 epochs: the shard is reopened
    assert set(keys) == {"s0", "s2", "s3", "s4", "s5"}  # what follows s1 is read
    skipped = it.stats()["skipped"]
    assert list(skipped) == ["bad_member"] and skipped["bad_member"] >= 1  # s1, once per opening


def test_with_images_off_no_image_is_decoded_or_sent(tmp_path, tokenizer):
    samples = [
        {"__key__": f"g{i}", "jpg": _jpeg("red"), "txt": "A red image.", "json": {"lang": "en"}}
        for i in range(3)
    ]
    samples.append(
        {"__key__": "corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": "A red image.", "json": {"lang": "en"}}
    )
    with wds.TarWriter(str(tmp_path / "0.tar")) as w:
        for s in samples:
            w.write(s)
    cfg = DataConfig(shards=str(tmp_path / "0.tar"), tasks={"caption": 1.0}, image_size=SIZE, num_workers=0,
                     images=False)  # fmt: skip
    fmt = Formatter(tokenizer, num_queries=16, max_length=512)
    it = build_loader(cfg, fmt, image_transform(VisionConfig(), SIZE), 4, 0, 0, 1)
    batches = take(iter(it), 4)
    assert "corrupt" in {k for b in batches for k in b["keys"]}  # its bad bytes are never opened
    assert it.stats()["skipped"] == {}
    for batch in batches:
        assert not batch["has_image"].any() and batch["pixel_values"].shape[0] == 0
        assert (batch["input_ids"] != fmt.ids.image_pad).all()
