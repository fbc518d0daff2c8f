import json

from data_prep.__main__ import main
from data_prep.config import PrepConfig
from pipeline.config import CONFIG_ROOT, load_config


def test_prep_writes_the_raw_world_and_its_resolved_config(tmp_path, capsys):
    out = tmp_path / "prep"
    assert (
        main(
            ["--config", str(CONFIG_ROOT / "data" / "synthetic.yaml"), f"output_dir={out}", "num_samples=20"]
        )
        == 0
    )
    assert load_config(PrepConfig, out / "config.yaml") == PrepConfig(output_dir=str(out), num_samples=20)
    assert json.loads((out / "raw" / "world.json").read_text())["num_pairs"] == 20
    assert "no shards written" in capsys.readouterr().out  # says plainly what is not built


def test_prep_rejects_a_bad_key_by_name(capsys):
    assert main(["--config", str(CONFIG_ROOT / "data" / "synthetic.yaml"), "num_sample=5"]) == 2
    assert "num_sample" in capsys.readouterr().err
    assert main(["--config", str(CONFIG_ROOT / "data" / "synthetic.yaml"), "source=laion"]) == 2
    assert "key 'source'" in capsys.readouterr().err
