"""Spec loading: validation with file, line and dotted key; --set overrides; sweep expansion."""

import pytest

from specrun.errors import SpecError
from specrun.spec.load import load_spec, parse_override, set_dotted
from specrun.spec.locate import locate

BASE = """\
[experiment]
name = "t"
seeds = [0, 1]

[data]
dataset = "glue/sst2"
max_train_examples = 100

[method]
name = "lora"
rank = 8

[train]
epochs = 1
"""


def write(tmp_path, text):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def problems(tmp_path, text, registry, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text), list(overrides), registry)
    return info.value.problems, str(info.value)


def test_valid_spec_expands_seeds(tmp_path, registry):
    loaded = load_spec(write(tmp_path, BASE), [], registry)
    assert [r.seed for r in loaded.runs] == [0, 1]
    assert loaded.runs[0].config["method"] == {
        "name": "lora",
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.1,
        "placement": None,
        "target_modules": None,
    }


def test_unknown_method_option_names_line_and_suggests(tmp_path, registry):
    found, text = problems(tmp_path, BASE.replace("rank = 8", "rnak = 8"), registry)
    assert found[0][0] == "method.rnak"
    assert found[0][1] == 11
    assert "did you mean 'rank'" in found[0][2]
    assert f"{tmp_path / 'spec.toml'}:11: method.rnak" in text


def test_unknown_section_key_suggests(tmp_path, registry):
    found, _ = problems(tmp_path, BASE.replace("epochs = 1", "epoch = 1"), registry)
    assert found[0][:2] == ("train.epoch", 14)
    assert "did you mean 'epochs'" in found[0][2]


def test_wrong_type_is_located(tmp_path, registry):
    found, _ = problems(tmp_path, BASE.replace("epochs = 1", 'epochs = "many"'), registry)
    assert found[0][:2] == ("train.epochs", 14)


def test_unknown_plugin_names_suggest(tmp_path, registry):
    found, _ = problems(tmp_path, BASE.replace('name = "lora"', 'name = "lorra"'), registry)
    assert found[0][0] == "method.name" and found[0][1] == 10
    assert "did you mean 'lora'" in found[0][2]
    found, _ = problems(tmp_path, BASE.replace('"glue/sst2"', '"glue/sst"'), registry)
    assert found[0][:2] == ("data.dataset", 6)
    assert "did you mean 'glue/sst2'" in found[0][2]


def test_toml_syntax_error_has_line(tmp_path, registry):
    found, text = problems(tmp_path, BASE.replace("rank = 8", "rank = = 8"), registry)
    assert found[0][1] == 11
    assert "TOML syntax error" in text


def test_missing_required_section(tmp_path, registry):
    found, _ = problems(tmp_path, BASE.replace('[method]\nname = "lora"\nrank = 8\n', ""), registry)
    assert found[0][0] == "method"
    assert "required" in found[0][2]


def test_set_overrides_and_errors(tmp_path, registry):
    loaded = load_spec(write(tmp_path, BASE), ["train.epochs=2", "method.rank=4", "experiment.seeds=[3]"], registry)
    assert loaded.runs[0].config["train"]["epochs"] == 2
    assert loaded.runs[0].config["method"]["rank"] == 4
    assert [r.seed for r in loaded.runs] == [3]
    found, _text = problems(tmp_path, BASE, registry, ["train.epochs=-1"])
    # at the line the --set item overrides, naming the item
    assert (
        found[0][0] == "train.epochs"
        and found[0][1] == locate(BASE, ["train", "epochs"])
        and "(from --set train.epochs=-1)" in found[0][2]
    )
    with pytest.raises(SpecError):
        parse_override("train.epochs")


def test_sweep_expands_grid_and_validates_values(tmp_path, registry):
    spec = BASE + '\n[sweep]\n"method.rank" = [4, 16]\n"train.learning_rate" = [1e-4, 1e-3]\n'
    loaded = load_spec(write(tmp_path, spec), [], registry)
    assert len(loaded.runs) == 8  # 2 × 2 × 2 seeds
    assert {(r.config["method"]["rank"], r.config["train"]["learning_rate"]) for r in loaded.runs} == {
        (4, 1e-4),
        (4, 1e-3),
        (16, 1e-4),
        (16, 1e-3),
    }
    found, _ = problems(tmp_path, BASE + '\n[sweep]\n"method.rank" = [4, 0]\n', registry)
    assert found[0][0] == "sweep.method.rank" and found[0][1] == 17
    assert "value 0" in found[0][2]
    found, _ = problems(tmp_path, BASE + '\n[sweep]\n"experiment.name" = ["a"]\n', registry)
    assert "can only sweep" in found[0][2]


def test_sweep_over_list_index(tmp_path, registry):
    tree = {"data": {"transforms": [{"name": "x", "k": 1}]}}
    set_dotted(tree, "data.transforms.0.k", 8)
    assert tree["data"]["transforms"][0]["k"] == 8
    with pytest.raises(KeyError):
        set_dotted(tree, "data.transforms.3.k", 8)


def test_locate_inline_tables_and_arrays():
    text = '[data]\ndataset = "x"\ntransforms = [\n  {name = "a"},\n  {name = "b", rate = 2},\n]\n[[analyses]]\nname = "q"\n[[analyses]]\nname = "r"\n'
    assert locate(text, ("data", "transforms", "1", "rate")) == 5
    assert locate(text, ("analyses", "1", "name")) == 10
    assert locate(text, ("data", "nothing")) == 1


SEARCH = """
[search]
n_trials = 2
metric = "{metric}"
[search.space]
"train.learning_rate" = {{ type = "float", low = 1e-5, high = 1e-3, log = true }}
"""


def test_a_search_metric_the_task_does_not_compute_is_refused_at_its_line(tmp_path, registry):
    """No trial of a classification search could have an exact_match (nor an extractive-QA one an accuracy):
    refused at search.metric before anything trains, not a search whose every trial has no value."""
    text = BASE + SEARCH.format(metric="exact_match")
    found, _ = problems(tmp_path, text, registry)
    assert [(key, line) for key, line, _ in found] == [
        ("search.metric", text.splitlines().index('metric = "exact_match"') + 1)
    ]
    assert "the task 'classification' computes accuracy, f1, f1_macro, loss; not 'exact_match'" in found[0][2]

    qa = (
        BASE.replace('dataset = "glue/sst2"', 'dataset = "squad"')
        + '\n[task]\nname = "extractive_qa"\ndoc_stride = 32\n'
    )
    found, _ = problems(tmp_path, qa + SEARCH.format(metric="accuracy"), registry)
    assert [key for key, _, _ in found] == ["search.metric"] and "not 'accuracy'" in found[0][2]
    assert load_spec(write(tmp_path, qa + SEARCH.format(metric="exact_match")), [], registry).spec.search
