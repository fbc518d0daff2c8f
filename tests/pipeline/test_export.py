"""The model card of an export says what data trained it: its shards, or its mixture's sources."""

from pipeline.config import CONFIG_ROOT, load_config
from pipeline.export import model_card
from pipeline.schema import StageConfig


def test_the_card_names_the_shards_or_the_sources():
    one = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", ["data.shards=/data/a/{0..9}.tar"])
    assert "data: `/data/a/{0..9}.tar`" in model_card(one, None)
    mixed = load_config(StageConfig, CONFIG_ROOT / "stage2.yaml", ["mixture=qwenvl-stage2"])
    card = model_card(mixed, None)
    assert "`caption` (weight 19.7), `vqa` (weight 3.6)" in card and "None" not in card
