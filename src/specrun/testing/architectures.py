"""Tiny random models of every architecture specrun has a role map for, without the hub.

Each is built from its transformers config (2 layers, hidden 32), with a word-level tokenizer trained
here on the toy task's words (``tokenizers``): encoders get [CLS]/[SEP]/[PAD], decoders only an
end-of-sequence token, as GPT-2, GPT-Neo and Pythia have (specrun pads them with it). ``make_arch_model``
saves one, after a short full fine-tuning on toy sentences (so that methods training little on top
of it can lower the loss), without its head.
"""

from __future__ import annotations

from pathlib import Path

#: The architectures (``config.model_type``) of the tiny models, one per role map entry.
ARCHITECTURES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "albert",
    "deberta-v2",
    "electra",
    "gpt2",
    "gpt_neo",
    "gpt_neox",
    "llama",
    "qwen2",
    "mistral",
)
DECODERS = ("gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2", "mistral")

ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DECODER_SPECIALS = ["<unk>", "<eos>"]
#: Models whose forward takes token type ids (their tokenizer returns them).
WITH_TOKEN_TYPES = ("bert", "albert", "electra", "deberta-v2")


def corpus() -> list[str]:
    """Every word the toy task, the contracts and the export probes use."""
    from specrun.runner.export import PROBES
    from specrun.testing.contracts import WORDS
    from specrun.testing.toy import FILLER, NEGATIVE, POSITIVE

    words = POSITIVE + NEGATIVE + FILLER + WORDS + " ".join(PROBES).replace(",", " ").split()
    return [" ".join(words), "is this review positive or negative"]


def make_tokenizer(model_type: str):
    """A word-level fast tokenizer for ``model_type``: encoders with [CLS] x [SEP] (pairs: [CLS] a [SEP]
    b [SEP]) and a pad token; decoders with an end-of-sequence token and no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if model_type == "qwen2":
        return _byte_level_tokenizer()
    decoder = model_type in DECODERS
    specials = DECODER_SPECIALS if decoder else ENCODER_SPECIALS
    tok = Tokenizer(models.WordLevel(unk_token=specials[0] if decoder else "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus(), trainers.WordLevelTrainer(special_tokens=specials))
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if model_type in WITH_TOKEN_TYPES else [])
    if decoder:
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", bos_token="<eos>", model_input_names=inputs
        )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=inputs,
    )


def _byte_level_tokenizer():
    """Qwen2's kind of tokenizer (transformers loads qwen2 folders with its byte-level BPE class): a small
    BPE trained on the corpus, whose end-of-text token is also its pad token, as in Qwen2's own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            special_tokens=["<|endoftext|>"], vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_config(model_type: str, tokenizer):
    """The transformers config of a tiny ``model_type`` model (2 layers, hidden 32, 2 heads)."""
    import transformers as t

    vocab = len(tokenizer)
    size = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    if model_type in DECODERS:
        eos = tokenizer.eos_token_id
        ids = {"vocab_size": vocab, "bos_token_id": eos, "eos_token_id": eos}
        if model_type == "gpt2":
            return t.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **ids)
        if model_type == "gpt_neo":
            return t.GPTNeoConfig(
                hidden_size=32,
                num_layers=2,
                num_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                attention_types=[[["global", "local"], 1]],
                window_size=16,
                **ids,
            )
        if model_type == "gpt_neox":
            return t.GPTNeoXConfig(**size, **ids)
        kinds = {"llama": t.LlamaConfig, "qwen2": t.Qwen2Config, "mistral": t.MistralConfig}
        return kinds[model_type](num_key_value_heads=1, **size, **ids)
    ids = {"vocab_size": vocab, "pad_token_id": tokenizer.pad_token_id}
    if model_type == "bert":
        return t.BertConfig(**size, **ids)
    if model_type in ("roberta", "xlm-roberta", "camembert"):
        kind = {"roberta": t.RobertaConfig, "xlm-roberta": t.XLMRobertaConfig, "camembert": t.CamembertConfig}[
            model_type
        ]
        return kind(**{**size, "max_position_embeddings": 66}, type_vocab_size=1, **ids)
    if model_type == "distilbert":
        return t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64, **ids)
    if model_type == "albert":
        return t.AlbertConfig(embedding_size=16, **size, **ids)
    if model_type == "electra":
        return t.ElectraConfig(embedding_size=16, **size, **ids)
    if model_type == "deberta-v2":  # as DeBERTa-v3: relative attention, no absolute positions
        return t.DebertaV2Config(
            **size,
            **ids,
            relative_attention=True,
            position_buckets=16,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            type_vocab_size=0,
        )
    raise ValueError(f"no tiny config for {model_type!r}")


def make_arch_model(model_type: str, folder: Path, steps: int = 80, lr: float = 3e-3) -> Path:
    """Save a tiny ``model_type`` backbone (seeded) and its tokenizer into ``folder``, after ``steps``
    steps of full fine-tuning on toy sentences (not the toy data's), without the head; returns it."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from specrun.testing.toy import single_thread, toy_rows

    tokenizer = make_tokenizer(model_type)
    config = tiny_config(model_type, tokenizer)
    torch.manual_seed(0)
    with single_thread():
        config.num_labels = 2
        model = AutoModelForSequenceClassification.from_config(config)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        rows = toy_rows(320, seed=7)
        for start in range(0, steps * 16, 16):
            batch = [rows[i % len(rows)] for i in range(start, start + 16)]
            inputs = tokenizer([text for text, _ in batch], return_tensors="pt", padding=True)
            loss = model(**inputs, labels=torch.tensor([label for _, label in batch])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    if loss.item() >= 0.4:
        raise AssertionError(f"the tiny {model_type} did not learn the toy task (last loss {loss.item():.3f})")
    if model_type in DECODERS:  # saved as the hub has them: no pad token in the config (nor the tokenizer, but Qwen2's)
        model.config.pad_token_id = None
    model.base_model.save_pretrained(folder)
    make_tokenizer(model_type).save_pretrained(folder)  # a fresh one: padding above left a pad token in this one
    return folder
