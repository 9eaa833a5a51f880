"""Built-in transforms: one contract every transform passes, then each transform's own behaviour and errors."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from pydantic import ValidationError

from specrun.errors import DataError
from specrun.examples import Examples
from specrun.plugins.api import TransformContext
from specrun.testing import check_transform, registry_with, sample_examples, transform_context

LABELS = ("neg", "neu", "pos")
make_examples = sample_examples  # the kit's examples: 4 to 12 random words, labels cycling through 3 classes


def fake_losses(teacher: str, examples: Examples) -> list[float]:
    """A stand-in teacher: a loss per example derived from its id (stable, unrelated to position)."""
    return [int(hashlib.sha256(f"{teacher}/{i}".encode()).hexdigest()[:8], 16) / 2**32 for i in examples.ids]


def context(seed: int = 0, split: str = "train", scores=fake_losses) -> TransformContext:
    return transform_context(seed=seed, split=split, scores=scores)


@pytest.fixture
def synonyms_file(tmp_path):
    path = tmp_path / "synonyms.tsv"
    path.write_text("# word<TAB>synonyms\ngood\tgreat\tfine\nbad\tpoor\tawful\nmovie\tfilm\tpicture\nplot\tstory\n")
    return path


def apply(registry, name: str, examples: Examples, ctx: TransformContext | None = None, **options) -> Examples:
    plugin = registry.get("transform", name)
    return plugin.apply(examples, plugin.Options.model_validate(options), ctx or context())


# --- the contract ---------------------------------------------------------------------------------

#: Options for each registered transform, and what it promises (``specrun.testing.check_transform``'s
#: ``kind``): rewrite (texts rewritten, copies get '<id>~...' ids), select (a subset of the input),
#: relabel (labels change, nothing else), map (texts rewritten in place, no randomness).
CONTRACT = {
    "noise": ({"char_rate": 0.1, "word_rate": 0.1, "typo_rate": 0.05, "emoji_rate": 0.05, "copies": 2}, "rewrite"),
    "augment": ({"copies": 2, "alpha": 0.2, "synonyms": "{synonyms}"}, "rewrite"),
    "label_noise": ({"fraction": 0.3}, "relabel"),
    "few_shot": ({"k": 5}, "select"),
    "difficulty": ({"teacher": "teacher-run", "n": 20, "strategy": "uniform"}, "select"),
    "clean": ({"lowercase": True}, "map"),
}


def builtin_transform_names() -> list[str]:
    return registry_with().names("transform")


def test_contract_table_covers_every_registered_transform(registry):
    assert set(registry.names("transform")) == set(CONTRACT), "add a CONTRACT row for each new transform"


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
@pytest.mark.parametrize("name", builtin_transform_names())
def test_transform_contract(registry, name, pair, synonyms_file):
    """The kit's contract (purity, determinism, alignment, what the kind promises), then the numbers
    each built-in promises on top."""
    options, kind = CONTRACT[name]
    options = {k: (str(synonyms_file) if v == "{synonyms}" else v) for k, v in options.items()}
    examples = make_examples(pair=pair)
    out = check_transform(
        registry,
        name,
        options,
        kind=kind,
        examples=examples,
        context=lambda seed: context(seed=seed),
        seeded=kind != "map",
    )
    if kind == "relabel":
        assert sum(a != b for a, b in zip(out.label, examples.label)) == round(0.3 * len(examples))
    if kind == "rewrite":
        assert len(out) == 3 * len(examples)
        assert all(i.split("~")[1] in (f"{name}1", f"{name}2") for i in out.ids[len(examples) :])


# --- noise ----------------------------------------------------------------------------------------


def test_noise_mode_auto_augments_train_and_replaces_eval_sets(registry):
    examples = make_examples()
    train = apply(registry, "noise", examples, context(split="train"), char_rate=0.2)
    noisy_eval = apply(registry, "noise", examples, context(split="noisy"), char_rate=0.2)
    assert len(train) == 2 * len(examples) and train.ids[60] == "ex0~noise1"
    assert noisy_eval.ids == examples.ids and noisy_eval.label == examples.label
    assert sum(a != b for a, b in zip(noisy_eval.text, examples.text)) > 50
    forced = apply(registry, "noise", examples, context(split="noisy"), char_rate=0.2, mode="augment", copies=3)
    assert len(forced) == 4 * len(examples)
    assert len(apply(registry, "noise", examples, context(split="train"), char_rate=0.2, mode="replace")) == len(
        examples
    )


def test_noise_of_an_example_depends_on_its_id_seed_and_split_not_its_neighbours(registry):
    examples = make_examples()
    full = apply(registry, "noise", examples, context(split="noisy"), char_rate=0.3)
    part = apply(registry, "noise", examples.select([5, 17, 2]), context(split="noisy"), char_rate=0.3)
    assert part.text == (full.text[5], full.text[17], full.text[2])
    other_split = apply(registry, "noise", examples, context(split="noisy2"), char_rate=0.3)
    assert other_split.text != full.text


def test_noise_fixed_seed_option_ignores_the_run_seed(registry):
    examples = make_examples()
    a = apply(registry, "noise", examples, context(seed=0, split="dev"), char_rate=0.2, seed=7)
    b = apply(registry, "noise", examples, context(seed=1, split="dev"), char_rate=0.2, seed=7)
    assert a == b


def test_noise_sides_of_a_text_pair(registry):
    examples = make_examples(pair=True)
    both = apply(registry, "noise", examples, context(split="dev"), char_rate=0.3)
    first = apply(registry, "noise", examples, context(split="dev"), char_rate=0.3, sides="text")
    second = apply(registry, "noise", examples, context(split="dev"), char_rate=0.3, sides="pair")
    assert both.text != examples.text and both.text_pair != examples.text_pair
    assert first.text != examples.text and first.text_pair == examples.text_pair
    assert second.text == examples.text and second.text_pair != examples.text_pair


def test_noise_char_rate_per_word_edits_one_character_of_each_word(registry):
    examples = make_examples()
    out = apply(
        registry, "noise", examples, context(split="dev"), char_rate=1.0, char_unit="word", char_ops=["substitute"]
    )
    for old, new in zip(examples.text, out.text):
        for w_old, w_new in zip(old.split(" "), new.split(" "), strict=True):
            assert len(w_old) == len(w_new) and sum(a != b for a, b in zip(w_old, w_new)) == 1


def test_noise_keyboard_typos_hit_qwerty_neighbours(registry):
    from specrun.plugins.transforms.noise import QWERTY

    examples = make_examples()
    out = apply(registry, "noise", examples, context(split="dev"), typo_rate=0.3)
    changed = [(a, b) for old, new in zip(examples.text, out.text) for a, b in zip(old, new, strict=True) if a != b]
    assert len(changed) > 50
    assert all(b in QWERTY[a] for a, b in changed)
    assert set(QWERTY["g"]) == set("tyfhvb") and set(QWERTY["a"]) == set("qwsz")


def test_noise_word_level_and_emoji(registry):
    examples = make_examples()
    repeated = apply(registry, "noise", examples, context(split="dev"), word_rate=1.0, word_ops=["repeat"])
    assert all(len(new.split()) == 2 * len(old.split()) for old, new in zip(examples.text, repeated.text))
    deleted = apply(registry, "noise", examples, context(split="dev"), word_rate=1.0, word_ops=["delete"])
    assert all(len(t.split()) == 1 for t in deleted.text), "deleting every word still leaves one"
    swapped = apply(registry, "noise", examples, context(split="dev"), word_rate=1.0, word_ops=["swap"])
    assert all(sorted(a.split()) == sorted(b.split()) for a, b in zip(examples.text, swapped.text))
    emoji = apply(registry, "noise", examples, context(split="dev"), emoji_rate=1.0)
    from specrun.plugins.transforms.noise import EMOJIS

    for old, new in zip(examples.text, emoji.text):
        tokens = new.split()
        assert tokens[0::2] == old.split() and all(t in EMOJIS for t in tokens[1::2])


def test_noise_chained_augmentation_keeps_ids_unique(registry):
    examples = make_examples()
    once = apply(registry, "noise", examples, char_rate=0.1)
    twice = apply(registry, "noise", once, char_rate=0.1)
    assert len(twice) == 4 * len(examples) and len(set(twice.ids)) == len(twice)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "at least one of"),
        ({"char_rate": 1.5}, "less than or equal to 1"),
        ({"char_rate": 0.1, "char_ops": []}, "at least 1"),
        ({"char_rate": 0.1, "char_ops": ["swap", "swap"]}, "twice"),
        ({"char_rate": 0.1, "char_ops": ["shuffle"]}, "substitute"),
        ({"char_rate": 0.1, "copies": 0}, "greater than or equal to 1"),
        ({"char_rate": 0.1, "mode": "both"}, "augment"),
    ],
)
def test_noise_options_are_checked_statically(registry, options, message):
    with pytest.raises(ValidationError, match=message):
        registry.get("transform", "noise").Options.model_validate(options)


# --- label_noise ----------------------------------------------------------------------------------


def test_label_noise_symmetric_flips_to_other_classes(registry):
    examples = make_examples(n=300)
    out = apply(registry, "label_noise", examples, fraction=0.2)
    flipped = [(a, b) for a, b in zip(examples.label, out.label) if a != b]
    assert len(flipped) == 60
    assert {b for _, b in flipped} == {0, 1, 2} and all(a != b for a, b in flipped)


def test_label_noise_to_a_named_class(registry):
    examples = make_examples(n=90)
    out = apply(registry, "label_noise", examples, fraction=0.5, to="pos")
    changed = [k for k, (a, b) in enumerate(zip(examples.label, out.label)) if a != b]
    assert len(changed) == 45 and all(out.label[k] == 2 for k in changed)


def test_label_noise_errors_name_the_value(registry):
    examples = make_examples(n=90)
    with pytest.raises(DataError, match=r"label_noise.*to='Pos' is not a class \(did you mean 'pos'\?\)"):
        apply(registry, "label_noise", examples, fraction=0.1, to="Pos")
    with pytest.raises(DataError, match=r"fraction=0.9 asks for 81 flips to 'pos', but only 60 of 90"):
        apply(registry, "label_noise", examples, fraction=0.9, to="pos")
    with pytest.raises(ValidationError):
        registry.get("transform", "label_noise").Options.model_validate({"fraction": 0})


# --- few_shot -------------------------------------------------------------------------------------


def test_few_shot_k_per_class_is_nested_across_k(registry):
    examples = make_examples(n=90)
    small = apply(registry, "few_shot", examples, k=2)
    large = apply(registry, "few_shot", examples, k=8)
    assert sorted(small.label) == [0, 0, 1, 1, 2, 2] and len(large) == 24
    assert set(small.ids) <= set(large.ids)


def test_few_shot_n_and_fraction_are_stratified(registry):
    examples = make_examples(n=100, num_labels=2).select([*range(0, 100, 2), *range(1, 40, 2)])  # 50 vs 20
    by_n = apply(registry, "few_shot", examples, n=14)
    assert len(by_n) == 14 and by_n.label.count(0) == 10 and by_n.label.count(1) == 4
    by_fraction = apply(registry, "few_shot", examples, fraction=0.5)
    assert by_fraction.label.count(0) == 25 and by_fraction.label.count(1) == 10


def test_few_shot_zero_is_an_empty_training_set(registry):
    for pair in (False, True):
        out = apply(registry, "few_shot", make_examples(pair=pair), k=0)
        assert len(out) == 0 and (out.text_pair == ()) == pair


def test_few_shot_errors_name_the_class_and_value(registry):
    examples = make_examples(n=30)
    with pytest.raises(DataError, match=r"few_shot.*split 'train'.*k=11 but class 'neg' has only 10 examples"):
        apply(registry, "few_shot", examples, k=11)
    only_two = examples.select([i for i in range(30) if examples.label[i] != 1])
    with pytest.raises(DataError, match="class 'neu' has only 0 examples"):
        apply(registry, "few_shot", only_two, k=1)
    with pytest.raises(DataError, match="n=31 but the split has only 30 examples"):
        apply(registry, "few_shot", examples, n=31)


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "exactly one of k, n, fraction"),
        ({"k": 4, "n": 10}, r"exactly one of k, n, fraction \(got k, n\)"),
        ({"fraction": 1.5}, "less than or equal to 1"),
        ({"fraction": 0}, "greater than 0"),
        ({"k": -1}, "greater than or equal to 0"),
    ],
)
def test_few_shot_options_are_checked_statically(registry, options, message):
    with pytest.raises(ValidationError, match=message):
        registry.get("transform", "few_shot").Options.model_validate(options)


# --- difficulty -----------------------------------------------------------------------------------


def test_difficulty_asks_the_teacher_about_exactly_these_examples(registry):
    calls = []

    def scores(teacher, examples):
        calls.append((teacher, examples))
        return fake_losses(teacher, examples)

    examples = make_examples()
    apply(registry, "difficulty", examples, context(scores=scores), teacher="specs/t.toml", n=10, strategy="easy")
    assert calls == [("specs/t.toml", examples)]


def test_difficulty_errors(registry):
    examples = make_examples()
    with pytest.raises(DataError, match=r"difficulty.*needs a teacher.*teacher='abc'"):
        apply(registry, "difficulty", examples, context(scores=None), teacher="abc", n=10, strategy="easy")
    with pytest.raises(DataError, match="budget n=61 but the split has only 60 examples"):
        apply(registry, "difficulty", examples, teacher="abc", n=61, strategy="hard")
    with pytest.raises(DataError, match="gave 3 scores for 60 examples"):
        apply(
            registry,
            "difficulty",
            examples,
            context(scores=lambda t, e: [0.1, 0.2, 0.3]),
            teacher="abc",
            n=5,
            strategy="hard",
        )
    with pytest.raises(DataError, match="non-finite"):
        apply(
            registry,
            "difficulty",
            examples,
            context(scores=lambda t, e: [float("nan")] * len(e)),
            teacher="abc",
            n=5,
            strategy="hard",
        )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"teacher": "t", "n": 10, "strategy": "mixed", "mix": {"easy": 0.5, "middle": 0.5, "hard": 0.5}}, "must be 1"),
        (
            {"teacher": "t", "n": 10, "strategy": "easy", "mix": {"easy": 0.5, "middle": 0.5, "hard": 0}},
            "only applies to strategy = 'mixed'",
        ),
        ({"teacher": "t", "n": 0, "strategy": "easy"}, "greater than or equal to 1"),
        ({"teacher": "t", "n": 10, "strategy": "hardest"}, "uniform"),
        ({"n": 10, "strategy": "easy"}, "teacher"),
    ],
)
def test_difficulty_options_are_checked_statically(registry, options, message):
    with pytest.raises(ValidationError, match=message):
        registry.get("transform", "difficulty").Options.model_validate(options)


# --- clean ----------------------------------------------------------------------------------------


def test_clean_html_punctuation_whitespace_and_lowercase(registry):
    examples = Examples.from_columns(
        ["a", "b"],
        ["<p>It&#39;s   a \u201cgreat\u201d film \u2014 really<br/>good !</p>", "a < b > c , ok \u2026"],
        [0, 1],
        ["<b>Bold</b>\tmove", "\u2018fine\u2019"],
    )
    out = apply(registry, "clean", examples)
    assert out.text == ('It\'s a "great" film - really good!', "a < b > c, ok...")
    assert out.text_pair == ("Bold move", "'fine'")
    assert out.ids == examples.ids and out.label == examples.label
    assert apply(registry, "clean", examples, lowercase=True).text_pair == ("bold move", "'fine'")
    untouched = apply(
        registry,
        "clean",
        examples,
        strip_html=False,
        normalize_unicode=False,
        normalize_punctuation=False,
        space_before_punctuation=False,
        normalize_whitespace=False,
    )
    assert untouched == examples
    assert registry.get("transform", "clean").applies_to == "both"


# --- augment --------------------------------------------------------------------------------------


def test_augment_synonym_replacement_uses_only_the_file(registry, synonyms_file):
    examples = Examples.from_columns(["a"], ["Good movie , bad plot"], [1])
    out = apply(registry, "augment", examples, ops=["synonym"], alpha=1.0, synonyms=str(synonyms_file), copies=5)
    assert len(out) == 6
    for text in out.text[1:]:
        first, _, _, third, fourth = text.split()
        assert first in ("Great", "Fine") and third in ("poor", "awful") and fourth == "story"


def test_augment_reads_json_synonyms_and_inserts(registry, tmp_path):
    path = tmp_path / "syn.json"
    path.write_text(json.dumps({"movie": ["picture"], "plot": "storyline"}))
    examples = Examples.from_columns(["a"], ["the movie had a plot"], [0])
    out = apply(registry, "augment", examples, ops=["insert"], alpha=0.4, synonyms=str(path), mode="replace")
    added = Counter(out.text[0].split()) - Counter(examples.text[0].split())
    assert sum(added.values()) == 2 and set(added) <= {"picture", "storyline"}


def test_augment_swap_and_delete_without_synonyms(registry):
    examples = make_examples()
    out = apply(registry, "augment", examples, ops=["delete"], alpha=0.5, mode="replace")
    for old, new in zip(examples.text, out.text):
        assert len(new.split()) == max(1, len(old.split()) - round(0.5 * len(old.split())))
    swapped = apply(registry, "augment", examples, ops=["swap"], mode="replace")
    assert all(sorted(a.split()) == sorted(b.split()) for a, b in zip(examples.text, swapped.text))


def test_augment_missing_synonyms_file_is_a_data_error(registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DataError,
        match=r"synonyms file not found: .*nope\.tsv \(synonyms='nope\.tsv'; relative paths are relative to the working directory",
    ):
        apply(registry, "augment", make_examples(), synonyms="nope.tsv")
    (tmp_path / "nope.tsv").write_text("good\tgreat\n")  # relative to the working directory
    assert len(apply(registry, "augment", make_examples(), synonyms="nope.tsv")) == 120


def test_augment_synonyms_path_is_relative_to_the_spec_folder(registry, tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "syn.tsv").write_text("good\tgreat\n")
    monkeypatch.chdir(tmp_path)  # the working directory has no syn.tsv
    ctx = TransformContext(seed=0, split="train", label_names=LABELS, spec_dir=str(tmp_path / "specs"))
    assert len(apply(registry, "augment", make_examples(), ctx, synonyms="syn.tsv")) == 120
    with pytest.raises(DataError, match=r"relative paths are relative to the spec's folder, .*specs\)"):
        apply(registry, "augment", make_examples(), ctx, synonyms="other.tsv")


def test_augment_inputs_hash_the_parsed_synonyms(registry, tmp_path):
    plugin = registry.get("transform", "augment")
    options = plugin.Options.model_validate({"synonyms": "syn.tsv"})
    path = tmp_path / "syn.tsv"
    path.write_text("good\tgreat\tfine\n")
    first = plugin.inputs(options, str(tmp_path))
    path.write_text("# a comment changes nothing\ngood\tgreat\tfine\n")
    assert plugin.inputs(options, str(tmp_path)) == first
    path.write_text("good\tgreat\n")
    assert plugin.inputs(options, str(tmp_path)) != first
    assert plugin.inputs(plugin.Options.model_validate({}), str(tmp_path)) == {}


def test_augment_options_are_checked_statically(registry):
    options = registry.get("transform", "augment").Options
    with pytest.raises(ValidationError, match=r"need a synonyms file"):
        options.model_validate({"ops": ["synonym"]})
    with pytest.raises(ValidationError, match="alpha"):
        options.model_validate({"alpha": 0})
    assert options.model_validate({}).resolved_ops() == ["swap", "delete"]
    assert options.model_validate({"synonyms": "s.tsv"}).resolved_ops() == ["swap", "delete", "insert", "synonym"]
