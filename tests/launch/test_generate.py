import io

import pytest
from PIL import Image

from launch.generate import main
from pipeline.config import CONFIG_ROOT, load_config
from pipeline.model.qwenvl import save_pretrained
from pipeline.schema import StageConfig


@pytest.fixture(scope="module")
def export(tiny_model, tokenizer, tmp_path_factory):
    """The tiny model as a stage-3 final/ export."""
    cfg = load_config(
        StageConfig, CONFIG_ROOT / "stage3.yaml", ["model.adapter.num_queries=16", "data.image_size=56"]
    )
    folder = tmp_path_factory.mktemp("export") / "final"
    return save_pretrained(folder, tiny_model.state_dict(), tiny_model.llm.config, tokenizer, cfg)


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
