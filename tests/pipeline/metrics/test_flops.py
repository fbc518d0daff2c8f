import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.metrics.flops import FlopModel


@pytest.mark.parametrize(
    ("trainable", "expected"),
    [(["vision", "adapter"], {"vision": 3, "adapter": 3, "llm": 2}),  # stage 1: LLM passes gradients back
     (["vision", "adapter", "llm"], {"vision": 3, "adapter": 3, "llm": 3}),
     (["adapter", "llm"], {"vision": 1, "adapter": 3, "llm": 3})],  # stage 3: no gradient into the ViT
)  # fmt: skip
def test_backward_counted_only_where_it_runs(trainable, expected, tiny_model):
    assert FlopModel.of(tiny_model, trainable).multipliers == expected


def test_forward_flops_match_torch_flop_counter(tiny_model, tiny_batch):
    counted = FlopModel.of(tiny_model, []).batch(
        int(tiny_batch["has_image"].sum()), tiny_batch["attention_mask"].sum(1)
    )
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_model(**tiny_batch)
    # the formula counts attention over the whole (unpadded) length; torch counts the padded batch
    assert 0.85 < counted / counter.get_total_flops() < 1.15
