"""``train.cache_frozen`` on decoder classifiers (``specrun.runner.frozen``): the feature of an example is
the last layer's output at the token transformers' ``*ForSequenceClassification`` reads (the rightmost
one that is not the pad token, which for specrun's decoders is the end-of-sequence token), and the head
is the final norm then ``score``; the logits equal the whole model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_frozen_features import _final, _value

from specrun.errors import ConfigError
from specrun.spec.schema import RunSettings


def _decoder_model(folder, method: dict | None = None, precision: str = "fp32"):
    from specrun.plugins import get_registry
    from specrun.runner.build import build_model

    config = {
        "model": {"name": str(folder), "max_length": 32},
        "data": {"dataset": "local"},
        "method": method or {"name": "head_only"},
        "train": {"precision": precision, "cache_frozen": True},
        "seed": 0,
    }
    settings = RunSettings.of(config)
    model, _ = build_model(settings, get_registry(), 2, ("neg", "pos"), torch.device("cpu"))
    return model, settings


def _encoded(folder):
    """Toy sentences, then four rows that make the last-token rule matter when the pad token is the
    end-of-sequence token: a few words; the same words and two real end-of-sequence tokens (read before
    them); an end-of-sequence token in the middle (read after it); nothing but end-of-sequence tokens
    (read at position 0)."""
    from specrun.examples import Examples
    from specrun.runner.batching import Encoded, TokenCache
    from specrun.runner.modeling import load_tokenizer
    from specrun.testing.toy import toy_rows

    tokenizer = load_tokenizer(str(folder))
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos
    rows = toy_rows(40, 3)
    examples = Examples.from_columns([str(i) for i in range(len(rows))], [t for t, _ in rows], [y for _, y in rows])
    enc = Encoded.build(examples, TokenCache(tokenizer, 32))
    words = tokenizer("a really good film")["input_ids"]
    assert eos not in words
    extra = [words, [*words, eos, eos], [*words[:2], eos, *words[2:]], [eos, eos, eos]]
    enc.ids = list(enc.ids) + extra
    enc.types = list(enc.types) + [None] * len(extra)
    enc.labels = np.concatenate([enc.labels, np.array([1, 1, 0, 1])])
    enc.lengths = np.array([len(x) for x in enc.ids], dtype=np.int64)
    return enc, len(enc) - len(extra)


def _whole_logits(model, enc, batch_size: int) -> np.ndarray:
    from specrun.runner.batching import eval_batches

    out = np.zeros((len(enc), 2), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for index in eval_batches(enc.lengths, batch_size):
            out[index] = model(**enc.collate(index, torch.device("cpu"))).logits.numpy()
    return out


def test_last_positions_are_transformers_rule():
    from specrun.runner.frozen import last_positions

    ids = torch.tensor([[5, 6, 7, 1, 1], [5, 1, 6, 1, 1], [1, 1, 1, 1, 1], [5, 6, 7, 8, 9]])
    assert last_positions(ids, 1).tolist() == [2, 2, 0, 4]
    assert last_positions(ids[:1, :3], None).tolist() == [2]  # no pad token: the last one (a batch of one)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_positions(ids[:2], None, mask).tolist() == [2, 4]  # ... of each row


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2", "mistral"])
def test_logits_on_cached_features_equal_the_whole_model(arch, arch_model, tmp_path, monkeypatch):
    from specrun.runner.frozen import FrozenPrefix

    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "cache"))
    folder = arch_model(arch)
    model, settings = _decoder_model(folder)
    enc, n = _encoded(folder)
    prefix = FrozenPrefix(model, settings)
    assert len(prefix.head_paths) == 2 and prefix.head_paths[1] == "score"  # the final norm, then score
    split = prefix.features(enc, 8, "fp32", torch.device("cpu"))
    model.eval()
    with torch.inference_mode():
        cached = prefix.head(features=torch.from_numpy(split.features)).logits.numpy()
    np.testing.assert_allclose(cached, _whole_logits(model, enc, 8), atol=1e-5)
    np.testing.assert_allclose(cached, _whole_logits(model, enc, 1), atol=1e-5)  # unpadded: the same token
    # trailing end-of-sequence tokens are skipped as padding: the logits of the words alone
    np.testing.assert_allclose(cached[n + 1], cached[n], atol=1e-5)
    assert not np.allclose(cached[n + 2], cached[n], atol=1e-4)  # one in the middle: read after it

    # reading the row's last real position instead (the trailing end-of-sequence token) gives other logits
    with torch.inference_mode():
        at_eos = model.score(prefix.backbone(input_ids=torch.tensor([enc.ids[n + 1]]))[0][0, -1]).numpy()
    assert not np.allclose(at_eos, cached[n + 1], atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_under_bf16_the_evaluation_matches_the_whole_model(arch, arch_model, tmp_path, monkeypatch):
    """The task's evaluation under bf16 autocast: the same predictions within bf16 rounding."""
    from specrun.plugins.api import NoOptions, TaskContext
    from specrun.plugins.tasks.classification import Classification
    from specrun.runner.frozen import FrozenPrefix
    from specrun.runner.modeling import load_tokenizer

    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "cache"))
    folder = arch_model(arch)
    model, settings = _decoder_model(folder, precision="bf16")
    enc, _ = _encoded(folder)
    task, ctx = Classification(), TaskContext(load_tokenizer(str(folder)), 32, NoOptions(), ("neg", "pos"))
    device = torch.device("cpu")
    whole = task.evaluate(model, enc, ctx, 8, "bf16", device)
    prefix = FrozenPrefix(model, settings)
    cached = task.evaluate(prefix.head, prefix.features(enc, 8, "bf16", device), ctx, 8, "bf16", device)
    np.testing.assert_allclose(cached.rows["loss"], whole.rows["loss"], atol=2e-2)
    assert cached.metrics["loss"] == pytest.approx(whole.metrics["loss"], abs=1e-2)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_frozen_adapters_are_in_the_features_and_the_logits_still_equal(arch, arch_model, tmp_path, monkeypatch):
    """lora with train = "head" (peft wraps the model; what a transfer loads is set by hand here): the
    features include the adapters' update, and the logits equal the adapted model's."""
    from specrun.runner.frozen import FrozenPrefix

    monkeypatch.setenv("SPECRUN_CACHE_DIR", str(tmp_path / "cache"))
    folder = arch_model(arch)
    plain, plain_settings = _decoder_model(folder)
    model, settings = _decoder_model(folder, {"name": "lora", "rank": 4, "train": "head"})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    enc, _ = _encoded(folder)
    prefix = FrozenPrefix(model, settings)
    split = prefix.features(enc, 8, "fp32", torch.device("cpu"))
    model.eval()
    with torch.inference_mode():
        cached = prefix.head(features=torch.from_numpy(split.features)).logits.numpy()
    np.testing.assert_allclose(cached, _whole_logits(model, enc, 8), atol=1e-5)
    pretrained = FrozenPrefix(plain, plain_settings)._compute(enc, 8, "fp32", torch.device("cpu"))
    assert not np.allclose(split.features, pretrained, atol=1e-3)  # the adapters changed the features
    assert prefix.weights != FrozenPrefix(plain, plain_settings).weights


def test_freeze_of_every_layer_trains_the_final_norm_in_the_head(arch_model):
    """``freeze`` leaves a decoder's final norm training (it is no layer): the norm is part of the head."""
    from specrun.runner.frozen import FrozenPrefix

    model, settings = _decoder_model(arch_model("llama"), {"name": "freeze", "layers": 2})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.norm.weight", "score.weight"}
    prefix = FrozenPrefix(model, settings)
    assert prefix.head.norm is model.model.norm and prefix.head.score is model.score


def test_a_decoder_that_trains_inside_the_backbone_is_refused(arch_model):
    from specrun.runner.frozen import FrozenPrefix

    model, settings = _decoder_model(arch_model("gpt2"))
    model.transformer.h[1].mlp.c_fc.weight.requires_grad_(True)
    with pytest.raises(ConfigError, match="inside the backbone") as caught:
        FrozenPrefix(model, settings)
    assert caught.value.key == "train.cache_frozen"


def _on(spec, tiny_model_dir, folder):
    spec.write_text(spec.read_text().replace(str(tiny_model_dir), str(folder)))
    return spec


@pytest.mark.parametrize(
    ("arch", "method"), [("gpt2", 'name = "head_only"'), ("gpt_neo", 'name = "freeze"\nfraction = 1.0')]
)
def test_a_decoder_run_trains_on_cached_features_and_a_second_loads_them(
    write_spec, cli, tiny_model_dir, arch_model, arch, method
):
    spec = write_spec(method=method, train="epochs = 1\nlearning_rate = 0.05\ncache_frozen = true")
    spec = _on(spec, tiny_model_dir, arch_model(arch))
    spec.write_text(spec.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    code, _, err = cli("apply", str(spec))
    assert code == 0, err
    rows = _final(cli, "toy")
    assert _value(rows, "cost", "frozen_features_cached", seed=0) == 0.0
    assert _value(rows, "cost", "frozen_features_cached", seed=1) == 1.0  # another head, the same backbone
    assert _value(rows, "validation", "n_examples") == 80


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_transferred_frozen_adapters_on_a_decoder(write_spec, cli, tiny_model_dir, arch_model, method):
    """lora/qlora with train = "head" from a source run on Llama: the transferred adapters are in the frozen
    part and the run trains its head on the features."""
    folder = arch_model("llama")
    options = f'name = "{method}"\nrank = 4' + ('\ncompute_dtype = "fp32"' if method == "qlora" else "")
    source = write_spec(name="source", method=options, train="max_steps = 5\nlearning_rate = 0.05")
    _on(source, tiny_model_dir, folder)
    target = write_spec(
        name="target",
        method=options + '\ntrain = "head"',
        train="epochs = 1\nlearning_rate = 0.05\ncache_frozen = true",
    )
    target.write_text(target.read_text().replace("max_length = 32", f'max_length = 32\ninit_from = "{source.name}"'))
    _on(target, tiny_model_dir, folder)
    code, _, err = cli("apply", str(target))
    assert code == 0, err
    rows = _final(cli, "target")
    assert _value(rows, "cost", "frozen_features_cached") == 0.0
    assert _value(rows, "validation", "n_examples") == 80


def test_freezing_some_decoder_layers_is_still_refused_at_plan(write_spec, cli, tiny_model_dir, arch_model):
    spec = write_spec(method='name = "freeze"\nlayers = 1', train="epochs = 1\ncache_frozen = true")
    code, _, err = cli("apply", str(_on(spec, tiny_model_dir, arch_model("gpt2"))))
    assert code == 2, err
    assert "train.cache_frozen: layers = 1 freezes 1 of the 2 layers" in err
    assert "Traceback" not in err
