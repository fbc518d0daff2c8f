from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from pipeline.tokens import REQUIRED, TAGS, prepare_tokenizer, special_ids, to_model_text


def test_the_offline_tokenizer_already_reserves_every_token(tokenizer):
    assert prepare_tokenizer(tokenizer) == []
    ids = special_ids(tokenizer)
    assert len({ids.endoftext, ids.im_start, ids.im_end, ids.image_start, ids.image_end, ids.image_pad}) == 6
    assert ids.pad == ids.endoftext  # Qwen2's convention


def test_a_tokenizer_without_them_gets_atomic_special_tokens():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(["<img> a <ref>dog</ref> <box>(1,2)</box>"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="</s>")
    before = len(tok)
    added = prepare_tokenizer(tok)
    assert added == REQUIRED and len(tok) == before + len(REQUIRED)
    assert tok.pad_token == "<|endoftext|>"
    text = to_model_text("<img></img><ref>dog</ref><box>(1,2),(3,4)</box><quad>(1,2)</quad>")
    ids = tok.encode(text, add_special_tokens=False)
    for tag, token in TAGS.items():
        assert ids.count(tok.convert_tokens_to_ids(token)) == 1, tag
    assert prepare_tokenizer(tok) == []  # idempotent


def test_tags_map_to_the_reserved_tokens():
    assert to_model_text("<ref>a</ref><quad>(1,2)</quad> <img>") == (
        "<|object_ref_start|>a<|object_ref_end|><|quad_start|>(1,2)<|quad_end|> <|vision_start|>"
    )
    assert to_model_text("a < b > c <refx>") == "a < b > c <refx>"
