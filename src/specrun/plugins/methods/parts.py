"""Finding the parts of a transformers sequence classifier that the methods select.

Not a plugin: the built-in methods share these helpers. They address the model through its roles
(``specrun.core.roles``: query, value, FFN, layers, embeddings, pooler, head), resolved per
architecture in one place, so BERT, RoBERTa, DistilBERT, ALBERT, DeBERTa-v2, ELECTRA, GPT-2, GPT-Neo,
GPT-NeoX and Llama-style classifiers all work, and a method that cannot do what it says on one of
them is refused before anything trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from specrun.core.roles import RoleMap, arch_name, role_map, role_map_for
from specrun.errors import SpecrunError

if TYPE_CHECKING:  # imported where a model is built: listing plugins and adding commands stay fast
    import torch

    from specrun.plugins.api import ModelInfo


def roles_of(model: torch.nn.Module) -> RoleMap | None:
    """The role map of a built classifier (None for an architecture specrun has no map for)."""
    return role_map_for(getattr(getattr(model, "config", None), "model_type", None))


def required_roles(model: ModelInfo, key: str, what: str) -> RoleMap:
    """The role map of the model a run will load; ConfigError at ``key`` when there is none."""
    return role_map(model.config, key=key, what=what)


def is_head(model: torch.nn.Module, name: str) -> bool:
    """Whether parameter ``name`` belongs to the task head: its architecture's head modules (e.g.
    ``classifier``; ``pre_classifier`` + ``classifier`` on DistilBERT; ``score`` on decoders); for an
    architecture without a role map, anything outside the pretrained backbone."""
    if name.startswith(QA_HEAD + "."):  # the extractive-QA head (*ForQuestionAnswering), on every architecture
        return True
    roles = roles_of(model)
    if roles is not None:
        return roles.in_head(name)
    return not name.startswith(model.base_model_prefix + ".")


#: The head transformers' ``*ForQuestionAnswering`` models put on the backbone (start/end logits).
QA_HEAD = "qa_outputs"


def is_qa_model(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a transformers ``*ForQuestionAnswering`` model (start/end logits from ``qa_outputs``)."""
    return type(model).__name__.endswith("ForQuestionAnswering")


def head_modules(model: torch.nn.Module, roles: RoleMap | None) -> list[str] | None:
    """The modules of the task head a peft method trains and saves with its adapters (``modules_to_save``):
    ``qa_outputs`` on a question-answering model, else the classifier's head of the architecture (None:
    no role map, peft's own default)."""
    if is_qa_model(model):
        return [QA_HEAD]
    return list(roles.head) if roles else None


def peft_task_type(model: torch.nn.Module):
    """peft's task type for adapters on ``model``: ``SEQ_CLS`` on a sequence classifier; None (peft's plain
    ``PeftModel``, which hands every input to the model as it is) on a question-answering model, because
    peft's ``QUESTION_ANS`` wrapper (``PeftModelForQuestionAnswering``, peft 0.21) takes ``token_type_ids``
    as an argument and never passes it on: BERT-like models would lose the question/context segments
    (a silently different model from the one full fine-tuning trains). The head is trained and saved
    through ``modules_to_save`` (``head_modules``) either way."""
    from peft import TaskType

    return None if is_qa_model(model) else TaskType.SEQ_CLS


def describe(model: ModelInfo) -> str:
    """``'roberta-base' (RoBERTa)``: the model and its architecture, for messages."""
    return f"{model.name!r} ({arch_name(model.config)})"


def backbone_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters of the pretrained backbone (everything but the head)."""
    return [n for n, _ in model.named_parameters() if not is_head(model, n)]


def encoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The backbone's stack of transformer layers and its module name (e.g. ``bert.encoder.layer``)."""
    roles = roles_of(model)
    if roles is None or roles.layer_list is None:
        raise SpecrunError(f"cannot find a list of layers in {type(model).__name__}")
    return roles.layer_list, model.get_submodule(roles.layer_list)


def train_only(model: torch.nn.Module, wanted) -> torch.nn.Module:
    """Freeze every parameter, then unfreeze those whose name ``wanted(name)`` accepts; returns ``model``."""
    for name, param in model.named_parameters():
        param.requires_grad_(bool(wanted(name)))
    return model
