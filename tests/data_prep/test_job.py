"""The prep job end to end on a real local Ray: counts, quality, shard contents, plots, resume."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from data_prep.chain import REASONS
from data_prep.job import run
from data_prep.sources import PrepConfig
from pipeline.config import CONFIG_ROOT, ConfigError, load_config
from pipeline.data.loader import read_record
from pipeline.data.shard_format import read_shard, read_shards
from pipeline.distributed import free_port
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = CONFIG_ROOT / "data" / "synthetic.yaml"
pytestmark = pytest.mark.slow


def prep_config(path: Path, *overrides: str) -> PrepConfig:
    return load_config(PrepConfig, path, list(overrides))


def shard_samples(summary: dict) -> list[dict]:
    return list(read_shards(summary["shards"]))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "synthetic"
    cfg = prep_config(SYNTHETIC, f"output_dir={out}", "synthetic.num_samples=300", "samples_per_shard=100",
                      "filters.clip.enabled=false")  # fmt: skip
    return cfg, run(cfg)


def test_every_input_is_kept_dropped_or_an_error(synthetic):
    cfg, summary = synthetic
    assert summary["input"] == 300 + 30  # pairs and the world's text-only samples
    assert summary["input"] == summary["kept"] + sum(summary["dropped"].values()) + sum(
        summary["errors"].values()
    )
    assert summary["errors"] == {}
    assert summary["funnel"][-1]["left"] == summary["kept"]
    stats = sorted((Path(cfg.output_dir) / "stats").glob("*.json"))
    assert len(stats) == 3 and all(json.loads(p.read_text())["input"] > 0 for p in stats)


def test_each_noise_kind_is_caught_by_its_filter(synthetic):
    _, summary = synthetic
    quality = summary["quality"]
    for label in ("aspect", "small", "language", "empty", "duplicate", "corrupt", "html"):
        assert quality[label]["samples"] > 0, label
        assert quality[label]["precision"] >= 0.95 and quality[label]["recall"] >= 0.95, (
            label,
            quality[label],
        )
    assert quality["mismatch"]["recall"] == 0.0  # the CLIP filter is off in this run: nothing catches them


def test_shards_hold_clean_resized_samples_the_loader_reads(synthetic):
    cfg, summary = synthetic
    raw = Path(cfg.output_dir) / "raw"
    samples = shard_samples(summary)
    assert len(samples) == summary["kept"]
    text_only = 0
    for sample in samples:
        record, data = read_record(sample)
        meta = record.meta
        if data is None:
            text_only += 1
            assert meta.get("text") or meta.get("messages")
            continue
        source = json.loads((raw / meta["source_id"]).with_suffix(".json").read_text())
        assert source["noise"] in ("clean", "html", "mismatch")  # the rest is dropped (CLIP is off here)
        truth = source["caption"] if source["noise"] == "mismatch" else source["clean_caption"]
        assert record.caption == truth  # html junk is cleaned to the ground truth
        assert meta["lang"] == source["lang"] and meta["tasks"]["vqa"] == source["tasks"]["vqa"]
        assert (meta["original_width"], meta["original_height"]) == (source["width"], source["height"])
        image = Image.open(io.BytesIO(data))
        assert max(image.size) <= cfg.max_side
        assert abs(image.width / image.height - source["width"] / source["height"]) < 0.02
    assert text_only > 0
    keys = [s["__key__"] for s in read_shard(summary["shards"][0])]
    assert keys != sorted(keys)  # written in shuffled order


def test_a_world_of_other_settings_in_the_output_dir_is_an_error_naming_them(synthetic):
    cfg, _ = synthetic
    other = prep_config(SYNTHETIC, f"output_dir={cfg.output_dir}", "synthetic.num_samples=300", "samples_per_shard=100",
                        "filters.clip.enabled=false", "synthetic.max_objects=1")  # fmt: skip
    with pytest.raises(ConfigError, match="max_objects=4 is there"):
        run(other)


def test_plots_are_written(synthetic):
    cfg, _ = synthetic
    plots = Path(cfg.output_dir) / "plots"
    for name in ("funnel", "aspect", "size", "languages", "world_preview"):
        assert (plots / f"{name}.png").stat().st_size > 5000, name


def _jpeg(size, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


GOOD = "A large red square on a plain beige background."


def bad_folder(root: Path) -> dict[str, str]:
    """One sample per way to fail, named for the reason it must be counted under; plus two good ones."""
    cases = {
        "good1": (_jpeg((300, 200)), GOOD),
        "good2": (
            _jpeg((800, 700), (20, 90, 200)),
            "A blue circle on a <b>dark</b> grey background &amp; more.",
        ),
        "missing_caption": (_jpeg((300, 200)), None),
        "bad_metadata": (_jpeg((300, 200)), GOOD),
        "decode_error": (b"\xff\xd8\xff\xe0 not really a jpeg", GOOD),
        "too_small": (_jpeg((60, 40)), GOOD),
        "aspect_ratio": (_jpeg((900, 200)), GOOD),
        "text_empty": (_jpeg((300, 200)), "<p>&nbsp;</p> http://example.com/a.jpg"),
        "text_too_short": (_jpeg((300, 200)), "cat"),
        "text_too_long": (_jpeg((300, 200)), "a red square " * 100),
        "charset": (_jpeg((300, 200)), "Красный квадрат на бежевом фоне."),
        "language": (_jpeg((300, 200)), "Un grand carre rouge sur un fond beige uni, avec une etoile bleue."),
        "zz_duplicate": (_jpeg((300, 200)), GOOD),  # the same bytes and caption as good1, later in order
    }
    root.mkdir(parents=True)
    for name, (data, caption) in cases.items():
        (root / f"{name}.jpg").write_bytes(data)
        if caption is not None:
            (root / f"{name}.txt").write_text(caption)
    (root / "bad_metadata.json").write_text("{not json")
    return {name: caption for name, (_, caption) in cases.items()}


def test_each_bad_sample_is_counted_under_its_own_reason(tmp_path, tiny_clip):
    bad_folder(tmp_path / "in")
    cfg = prep_config(
        CONFIG_ROOT / "data" / "folder.yaml", f"folder.input={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
        "filters.clip.arch=tiny-ViT-14", f"filters.clip.pretrained={tiny_clip}", "filters.clip.threshold=-1.0", "samples_per_shard=5",
    )  # fmt: skip
    summary = run(cfg)
    assert summary["errors"] == {"missing_caption": 1, "bad_metadata": 1}
    expected = ["decode_error", "too_small", "aspect_ratio", "text_empty", "text_too_short", "text_too_long",
                "charset", "language", "duplicate"]  # fmt: skip
    assert summary["dropped"] == dict.fromkeys(expected, 1)
    assert set(summary["dropped"]) <= {r for reasons in REASONS.values() for r in reasons}
    assert summary["kept"] == 2 and summary["input"] == 13
    kept = {s["json"]: s for s in shard_samples(summary)}
    metas = [json.loads(k) for k in kept]
    assert sorted(m["source_id"] for m in metas) == ["good1.jpg", "good2.jpg"]
    assert all(-1.0 <= m["clip_score"] <= 1.0 for m in metas)
    captions = sorted(s["txt"].decode() for s in kept.values())
    assert captions == ["A blue circle on a dark grey background & more.", GOOD]
    assert summary["clip"]["scored"] == 2 and sum(summary["histograms"]["clip_score"]) == 2
    assert (Path(cfg.output_dir) / "plots" / "clip_score.png").is_file()
    assert any("bad_metadata.jpg" in e for e in summary["error_examples"])  # errors name the file


def test_kill_9_then_rerun_finishes_with_the_same_kept_set(tmp_path, synthetic):
    _, reference = synthetic
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "data_prep", "--config", str(SYNTHETIC), f"output_dir={out}", "synthetic.num_samples=300",
           "samples_per_shard=20", "filters.clip.enabled=false", "workers=2"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    stats = out / "stats"
    assert wait_for(lambda: len(list(stats.glob("*.json"))) >= 2, timeout=240), "no part finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (out / "shards" / p.name.replace(".json", ".tar")).stat().st_mtime_ns
                for p in stats.glob("*.json")}  # fmt: skip
    assert len(finished) < 15, "the run ended before the kill: nothing to resume"

    rerun_start = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Ray workers can outlive the killed driver for a moment and finish a part or two more
    assert len(finished) <= summary["run"]["parts_skipped"] < 15
    for name, mtime in finished.items():  # finished shards were not rewritten
        assert (out / "shards" / name.replace(".json", ".tar")).stat().st_mtime_ns == mtime
    assert not list((out / "shards").glob("*.tmp"))  # a killed writer's temporary is removed
    assert len(list((out / "shards").glob("*.tar"))) == 15
    ids = [json.loads(s["json"])["source_id"] for s in shard_samples(summary)]
    assert len(ids) == len(set(ids)) == summary["kept"]  # nothing duplicated
    assert set(ids) == {json.loads(s["json"])["source_id"] for s in shard_samples(reference)}
    rerun = [p for p in stats.glob("*.json") if p.stat().st_mtime > rerun_start]
    workers = {json.loads(p.read_text())["worker"] for p in rerun}
    if len(rerun) >= 4:  # Ray ran the remaining parts on 2 worker processes (a straggler may have left few)
        assert len(workers) >= 2


def _members(shard: str) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "__url__"} for s in read_shard(shard)]


def test_a_ray_cluster_gives_the_same_shards_and_counts_as_local_ray(tmp_path, synthetic):
    """A head node started with `ray start --head` on 127.0.0.1, prep as a client of it (the project shipped
    to the workers as the job's working_dir), and the run compared with the local-mode fixture."""
    cfg, local = synthetic
    port = free_port()
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                            env={**os.environ, "RAY_ADDRESS": ""}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    out = tmp_path / "cluster"
    cmd = [sys.executable, "-m", "data_prep", "--config", str(SYNTHETIC), f"output_dir={out}", "synthetic.num_samples=300",
           "samples_per_shard=100", "filters.clip.enabled=false", f"ray_address=127.0.0.1:{port}"]  # fmt: skip
    try:
        for _ in range(3):  # the head needs a few seconds before it takes clients
            done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            if done.returncode == 0 or "Could not find any running Ray instance" not in done.stderr:
                break
            time.sleep(5)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    cluster = json.loads((out / "summary.json").read_text())
    for key in ("input", "kept", "dropped", "errors", "funnel", "quality", "languages"):
        assert cluster[key] == local[key], key
    for ours, theirs in zip(cluster["shards"], local["shards"], strict=True):
        assert _members(ours) == _members(theirs)
    workers = {json.loads(p.read_text())["worker"] for p in (out / "stats").glob("*.json")}
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers)  # the parts ran in the cluster's workers
