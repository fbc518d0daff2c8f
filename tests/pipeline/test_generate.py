import torch

from pipeline.generate import greedy, greedy_batch, prompt_length
from pipeline.tokens import ENDOFTEXT, IM_END


def test_a_left_padded_batch_generates_what_each_prompt_generates_alone(tiny_model, tiny_batch, tokenizer):
    model = tiny_model.eval()
    eos = tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_END])
    prompts, pixels, images = [], [], iter(tiny_batch["pixel_values"])
    for row in range(len(tiny_batch["keys"])):
        length = int(tiny_batch["attention_mask"][row].sum())
        labels = tiny_batch["labels"][row, :length].tolist()
        cut = prompt_length(labels) - row  # prompts of different lengths
        prompts.append(tiny_batch["input_ids"][row, :cut].tolist())
        pixels.append(next(images) if tiny_batch["has_image"][row] else None)
    has_image = [p is not None for p in pixels]
    real = torch.stack([p for p in pixels if p is not None])
    batched = greedy_batch(model, prompts, real, has_image, 12, eos, tokenizer.pad_token_id)
    alone = []
    for prompt, image in zip(prompts, pixels, strict=True):
        pixel_values = image[None] if image is not None else real[:0]
        alone.append(greedy(model, torch.tensor(prompt), pixel_values, image is not None, 12, eos))
    assert batched == alone and all(len(a) > 0 for a in alone)
    assert len({len(p) for p in prompts}) == len(prompts)
