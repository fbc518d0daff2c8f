"""Mixtures of sources (data.sources): weights hold whatever the sources' sizes, positions restore exactly,
bad mixtures name their key, a starved source is named, and the mixture check lists what is missing."""

import json

import pytest

from data_prep.synthetic.shards import one_task_shards
from launch.mixture import main as mixture_main
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.data.formats import Formatter
from pipeline.data.loader import build_loader
from pipeline.data.mixture import check_mixture
from pipeline.model.vision import image_transform
from pipeline.schema import DataConfig, SourceConfig, StageConfig, VisionConfig
from tests.pipeline.data.test_loader import SIZE, same, take


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, str]:
    """Caption-only (LAION-like, 300), referring-only (RefCOCO-like, 60) and a 12-sample VQA set in one shard."""
    root = tmp_path_factory.mktemp("sets")
    return {
        "captions": one_task_shards(root / "captions", 300, "caption", per_shard=50, seed=1),
        "refs": one_task_shards(root / "refs", 60, "ref", per_shard=20, seed=2),
        "vqa": one_task_shards(root / "vqa", 12, "vqa", per_shard=12, seed=3),
    }


def mixed(sources, tokenizer, rank=0, world_size=1, workers=0, batch=4, **data):
    cfg = DataConfig(sources=[SourceConfig(*s) for s in sources], tasks={"caption": 1, "ref": 1, "vqa": 1},
                     image_size=SIZE, num_workers=workers, **data)  # fmt: skip
    fmt = Formatter(tokenizer, num_queries=16, max_length=512)
    return build_loader(cfg, fmt, image_transform(VisionConfig(), SIZE), batch, 0, rank, world_size)


@pytest.mark.parametrize(("weights", "share"), [((1, 1), 0.5), ((3, 1), 0.25)])
def test_each_source_gets_its_weight_whatever_its_size(sets, tokenizer, weights, share):
    loader = mixed(
        [("laion", sets["captions"], weights[0]), ("refcoco", sets["refs"], weights[1])], tokenizer
    )
    batches = take(iter(loader), 150)  # 600 samples: the 60 referring samples repeat
    sources = [s for b in batches for s in b["sources"]]
    assert abs(sources.count("refcoco") / len(sources) - share) <= 0.05
    # each source feeds its own task; the counts and the epochs of the small source are reported
    assert all(
        (s == "refcoco") == (t == "ref")
        for b in batches
        for s, t in zip(b["sources"], b["tasks"], strict=True)
    )
    stats = loader.stats()
    assert stats["sources"] == {"laion": sources.count("laion"), "refcoco": sources.count("refcoco")}
    assert stats["epochs"]["refcoco"] >= 2 and stats["epochs"]["laion"] >= 1


@pytest.mark.parametrize(("world_size", "workers"), [(1, 0), (2, 2)])
def test_a_restored_mixture_continues_exactly(sets, tokenizer, world_size, workers):
    sources = [("laion", sets["captions"], 5), ("refcoco", sets["refs"], 2), ("vqa", sets["vqa"], 1)]
    for rank in range(world_size):  # 30 batches of 4: the 12-sample VQA set wraps around on every slot
        reference = mixed(sources, tokenizer, rank, world_size, workers)
        uninterrupted = take(iter(reference), 36)
        first = mixed(sources, tokenizer, rank, world_size, workers)
        assert all(same(a, b) for a, b in zip(take(iter(first), 30), uninterrupted, strict=False))
        assert first.stats()["epochs"]["vqa"] >= 2
        state = json.loads(json.dumps(first.state_dict()))
        restored = mixed(sources, tokenizer, rank, world_size, workers)
        restored.load_state_dict(state)
        after = take(iter(restored), 6)
        assert all(
            same(a, b) and a["sources"] == b["sources"]
            for a, b in zip(after, uninterrupted[30:], strict=True)
        )
        assert restored.stats() == reference.stats()  # the counts carry over too


def test_a_source_none_of_whose_samples_has_its_tasks_is_named(sets, tokenizer):
    loader = mixed([("laion", sets["captions"], 1, ["caption"]), ("broken", sets["refs"], 1, ["vqa"])], tokenizer,
                   max_skips_in_a_row=50)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"data.sources.broken.shards.*'broken'.*\['vqa'\].*no_task"):
        take(iter(loader), 20)


def test_one_source_is_the_data_shards_shorthand(world_shards, tokenizer):
    fmt = Formatter(tokenizer, num_queries=16, max_length=512)
    transform = image_transform(VisionConfig(), SIZE)
    short = DataConfig(shards=world_shards, image_size=SIZE, num_workers=0)
    listed = DataConfig(sources=[SourceConfig("default", world_shards)], image_size=SIZE, num_workers=0)
    assert short.mixture() == listed.mixture() and listed.shards is None
    a, b = (take(iter(build_loader(c, fmt, transform, 4, 0, 0, 1)), 5) for c in (short, listed))
    assert all(same(x, y) and x["sources"] == ["default"] * 4 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("sources", "key", "message"),
    [
        ([("a", "x.tar", 1, ["captions"])], r"data.sources\[0\].tasks", "unknown task 'captions'"),
        ([("a", "x.tar", 0)], r"data.sources\[0\].weight", "must be > 0"),
        ([("a", "x.tar", -2)], r"data.sources\[0\].weight", "must be > 0"),
        ([("a", "x.tar"), ("a", "y.tar")], r"data.sources\[1\].name", "'a' names two sources"),
        ([("a", " ")], r"data.sources\[0\].shards", "no shards"),
        ([("a b", "x.tar")], r"data.sources\[0\].name", "letters, digits"),
        ([("a", "x.tar", 1, [])], r"data.sources\[0\].tasks", "at least one task"),
    ],
)
def test_a_bad_mixture_names_its_key(sources, key, message):
    with pytest.raises(ConfigError, match=f"{key}.*{message}"):
        DataConfig(sources=[SourceConfig(*s) for s in sources])


def test_shards_that_match_nothing_name_the_source(sets, tmp_path, tokenizer):
    with pytest.raises(ConfigError, match=r"data.sources.refcoco.shards.*nothing/\*.tar"):
        mixed([("laion", sets["captions"], 1), ("refcoco", str(tmp_path / "nothing/*.tar"), 1)], tokenizer)
    with pytest.raises(ConfigError, match="data.shards or data.sources, not both"):
        load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", ["mixture=qwenvl-stage2", "data.shards=x.tar"])


def test_the_paper_mixtures_load_and_the_check_lists_what_is_missing(sets, tmp_path, capsys):
    cfg = load_config(
        StageConfig, CONFIG_ROOT / "stage2.yaml", ["mixture=qwenvl-stage2", f"data.root={tmp_path}"]
    )
    assert [s.name for s in cfg.data.sources][:2] == ["caption", "vqa"]
    assert sum(s.weight for s in cfg.data.sources) == pytest.approx(76.8)  # Table 3's samples, in millions
    assert cfg.data.sources[1].shards.startswith(f"{tmp_path}/gqa/shards/*.tar::")
    stage1 = load_config(StageConfig, CONFIG_ROOT / "stage1.yaml", ["mixture=qwenvl-stage1"])
    assert {s.name: s.weight for s in stage1.data.sources}["laion-coco"] == 300

    # a mixture with one source present and one absent: counted, then named as missing
    present = sets["vqa"].rsplit("/", 1)[0] + "/*.tar"
    overrides = [f"data.sources=[{{name: vqa, shards: '{present}', weight: 3}}, {{name: gone, shards: '{tmp_path}/x/*.tar'}}]",
                 "train.max_steps=10", "train.global_batch_size=8"]  # fmt: skip
    reports = check_mixture(load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", overrides).data, count=True)
    assert [(r.name, r.shards, r.samples, r.missing, r.share) for r in reports] == [
        ("vqa", 1, 12, [], 0.75),
        ("gone", 0, None, [f"{tmp_path}/x/*.tar"], 0.25),
    ]
    assert mixture_main(["--config", str(CONFIG_ROOT / "stage2.yaml"), "--count", *overrides]) == 1
    out = capsys.readouterr()
    assert (
        "| vqa | 3 | 75.0% | caption, grounded_caption, ocr, ref, text, vqa | 1 | 12 | 5.00 | - |" in out.out
    )
    assert "1 of 2 sources lack shards: gone" in out.err


def test_a_loader_position_from_before_mixtures_still_restores(world_shards, tokenizer):
    cfg = DataConfig(shards=world_shards, image_size=SIZE, num_workers=0)
    fmt, transform = (
        Formatter(tokenizer, num_queries=16, max_length=512),
        image_transform(VisionConfig(), SIZE),
    )
    uninterrupted = take(iter(build_loader(cfg, fmt, transform, 4, 0, 0, 1)), 8)
    first = build_loader(cfg, fmt, transform, 4, 0, 0, 1)
    take(iter(first), 5)
    state = json.loads(json.dumps(first.state_dict()))
    position = state["loader"]["dataset_state"]  # inline (no workers): the dataset's own state
    position["stream"] = position.pop("mixture")["streams"]["default"]  # the old layout: one stream
    restored = build_loader(cfg, fmt, transform, 4, 0, 0, 1)
    restored.load_state_dict(state)
    assert all(same(a, b) for a, b in zip(take(iter(restored), 3), uninterrupted[5:], strict=True))
