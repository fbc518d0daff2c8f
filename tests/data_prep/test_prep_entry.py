import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.__main__ import main, report
from pipeline.config import CONFIG_ROOT

SYNTHETIC = str(CONFIG_ROOT / "data" / "synthetic.yaml")


def test_prep_rejects_a_bad_key_by_name(capsys):
    assert main(["--config", SYNTHETIC, "num_sample=5"]) == 2
    assert "num_sample" in capsys.readouterr().err
    assert main(["--config", SYNTHETIC, "source=bogus"]) == 2
    assert "key 'source'" in capsys.readouterr().err
    assert main(["--config", str(CONFIG_ROOT / "data" / "folder.yaml"), "filters.clip.device=tpu"]) == 2
    assert "filters.clip.device" in capsys.readouterr().err
    assert main(["--config", SYNTHETIC, "synthetic.max_objects=0"]) == 2
    assert "key 'synthetic.max_objects'" in capsys.readouterr().err


def test_prep_names_a_missing_input(tmp_path, capsys):
    folder = str(CONFIG_ROOT / "data" / "folder.yaml")
    assert (
        main(["--config", folder, f"folder.input={tmp_path / 'nope'}", f"output_dir={tmp_path / 'out'}"]) == 2
    )
    err = capsys.readouterr().err
    assert "key 'folder.input'" in err and "nope" in err


def test_laion_with_clip_weights_that_cannot_load_fails_in_one_line_before_downloading(tmp_path, capsys):
    parquet = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"URL": ["http://127.0.0.1:9/a.jpg"], "TEXT": ["a caption"]}), parquet)
    out = tmp_path / "out"
    args = ["--config", str(CONFIG_ROOT / "data" / "laion.yaml"), f"laion.input={parquet}", f"output_dir={out}",
            "filters.clip.arch=tiny-ViT-14", f"filters.clip.pretrained={tmp_path / 'missing.safetensors'}"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: key 'filters.clip.pretrained'")
    assert not (out / "raw").exists()  # nothing was downloaded
    assert main([*args[:4], "laion.download.url_col=url", f"output_dir={out}"]) == 2
    assert "laion.download.url_col" in capsys.readouterr().err


def test_an_output_dir_that_cannot_be_written_is_named(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--config", SYNTHETIC, f"output_dir={blocker / 'out'}"]) == 2
    assert "key 'output_dir'" in capsys.readouterr().err


def test_report_lists_counts_and_quality():
    summary = {
        "input": 10, "kept": 7, "kept_rate": 0.7, "dropped": {"too_small": 2}, "errors": {"http_404": 1},
        "quality": {"small": {"precision": 1.0, "recall": 0.5, "samples": 4}},
        "shard_pattern": "x/{000000..000001}.tar", "samples_per_s": 12.0,
    }  # fmt: skip
    text = report(summary)
    assert "10 in -> 7 kept (70.0%)" in text and '"too_small": 2' in text and '"http_404": 1' in text
    assert "precision 1.0 recall 0.5" in text
