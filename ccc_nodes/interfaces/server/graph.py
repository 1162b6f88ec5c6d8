"""API-format graphs: validation with ComfyUI's error types, execution order, cache keys.

An API-format graph (what ComfyUI's "Export (API)" writes and ``POST /prompt`` takes) is
``{node_id: {"class_type": str, "inputs": {name: value | [source_id, output_index]}}}``.
:func:`validate_prompt` answers like ComfyUI: ``(ok, error, outputs, node_errors)`` with
the same error ``type`` strings, so clients that parse ComfyUI's 400 answers parse ours.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["CycleError", "ValidationResult", "error_answer", "execution_order", "is_link", "node_info", "signatures",
           "validate_prompt"]

Registry = Mapping[str, type]
ValidationResult = tuple[bool, "dict | None", list[str], dict[str, dict]]


class CycleError(ValueError):
    """The graph links back to itself; ``nodes`` is the cycle, in link order."""

    def __init__(self, nodes: list[str]):
        super().__init__(" -> ".join([*nodes, nodes[0]]))
        self.nodes = nodes


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int)) and isinstance(value[1], int)


def _error(kind: str, message: str, details: str = "", **extra: Any) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def error_answer(kind: str, message: str, details: str = "") -> dict:
    """ComfyUI's body of a refused request: ``{"error": {...}, "node_errors": {}}``."""
    return {"error": _error(kind, message, details), "node_errors": {}}


def _input_info(spec: dict, name: str) -> tuple[Any, str | None, dict]:
    for category in ("required", "optional", "hidden"):
        if name in spec.get(category, {}):
            entry = spec[category][name]
            if category == "hidden":
                return entry, category, {}
            return entry[0], category, (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
    return None, None, {}


def types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's rule: equal, ``*`` on either side, or overlapping comma-separated unions."""
    if received == wanted or received == "*" or wanted == "*":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in wanted.split(",")})


def _validate_node(prompt: dict, node_id: str, registry: Registry, validated: dict,
                   specs: dict[str, dict]) -> tuple[bool, list[dict]]:
    """Check one node and, recursively, the nodes it links to. Converts widget values in place.
    ``specs`` keeps each class's ``INPUT_TYPES()`` for the whole validation: it may scan the disk."""
    if node_id in validated:
        return validated[node_id]
    validated[node_id] = (True, [])  # provisional: breaks cycles (reported by execution_order)
    node = prompt[node_id]
    cls = registry[node["class_type"]]
    inputs = node.setdefault("inputs", {})
    if not isinstance(inputs, dict):
        validated[node_id] = (False, [_error("invalid_input_type", "Node inputs must be an object", "inputs")])
        return validated[node_id]
    if node["class_type"] not in specs:
        specs[node["class_type"]] = cls.INPUT_TYPES()
    spec = specs[node["class_type"]]
    custom = getattr(cls, "VALIDATE_INPUTS", None)
    custom_args = set(custom.__code__.co_varnames[: custom.__code__.co_argcount]) if custom else set()
    errors: list[dict] = []
    valid = True
    for name in [*spec.get("required", {}), *spec.get("optional", {})]:
        wanted, category, extra = _input_info(spec, name)
        config = [wanted, extra]
        if name not in inputs:
            if category == "required":
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            continue
        value = inputs[name]
        if isinstance(value, list):
            if not is_link(value):
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                     name, input_name=name, input_config=config, received_value=value))
                continue
            source = str(value[0])
            if source not in prompt:
                errors.append(_error("bad_linked_input", f"Linked node {source} does not exist in the graph",
                                     name, input_name=name, input_config=config, received_value=value))
                continue
            returns = registry[prompt[source]["class_type"]].RETURN_TYPES
            if not 0 <= value[1] < len(returns):
                errors.append(_error("bad_linked_input", f"Node {source} has no output {value[1]}",
                                     name, input_name=name, input_config=config, received_value=value))
                continue
            received = returns[value[1]]
            if not types_match(received, wanted):
                errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                     f"{name}, received_type({received}) mismatch input_type({wanted})",
                                     input_name=name, input_config=config, received_type=received, linked_node=value))
                continue
            if not _validate_node(prompt, source, registry, validated, specs)[0]:
                valid = False
            continue
        if isinstance(value, dict) and "__value__" in value:  # a list value, wrapped by the frontend
            value = inputs[name] = value["__value__"]
        given = value  # what the client sent: always JSON, unlike a converted NaN or infinity
        try:
            if wanted == "INT":
                value = int(value)
            elif wanted == "FLOAT":
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(f"{given!r} is not a finite number"[:200])
            elif wanted == "STRING":
                value = str(value)
            elif wanted == "BOOLEAN":
                value = value if isinstance(value, bool) else _boolean(value)
            inputs[name] = value
        except (TypeError, ValueError, OverflowError) as e:
            errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {wanted} value",
                                 f"{name}, {given}, {e}"[:500], input_name=name, input_config=config,
                                 received_value=given, exception_message=str(e)[:500]))
            continue
        if name in custom_args:
            continue  # the node checks this input itself (ComfyUI skips min/max/list too)
        if "min" in extra and value < extra["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {extra['min']}",
                                 name, input_name=name, input_config=config, received_value=value))
        elif "max" in extra and value > extra["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {extra['max']}",
                                 name, input_name=name, input_config=config, received_value=value))
        elif isinstance(wanted, list) and value not in wanted:
            listed = str(wanted) if len(wanted) <= 20 else f"(list of length {len(wanted)})"
            errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {listed}",
                                 input_name=name, input_config=config if len(wanted) <= 20 else None,
                                 received_value=value))
    if custom is not None and not errors:
        args = {k: inputs[k] for k in custom_args if k in inputs and not is_link(inputs[k])}
        try:
            answer = custom(**args)
        except Exception as e:  # noqa: BLE001 - a node's own check failed: report, don't crash
            answer = f"{type(e).__name__}: {e}"
        if answer is not True:
            first = next(iter(args), "")
            details = first + ("" if answer is False else f" - {answer}")
            errors.append(_error("custom_validation_failed", "Custom validation failed for node", details, input_name=first))
    validated[node_id] = (valid and not errors, errors)
    return validated[node_id]


def _boolean(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in (0, 1):
        return bool(value)
    raise ValueError(f"{value!r} is not a boolean")


def validate_prompt(prompt: Any, registry: Registry, targets: list[str] | None = None) -> ValidationResult:
    """Validate an API-format graph; widget values are converted in place (pass a copy).

    Returns ``(ok, error, output_node_ids, node_errors)`` as ComfyUI's ``validate_prompt``:
    ``error`` is ``{"type", "message", "details", "extra_info"}`` when not ok, and
    ``node_errors[node_id] = {"errors": [...], "dependent_outputs": [...], "class_type": ...}``.
    ``targets`` limits execution to some output nodes (ComfyUI's partial execution). A
    cycle is reported on each node of the cycle, as a ``dependency_cycle`` error.
    """
    if not isinstance(prompt, dict) or not prompt:
        return False, _error("invalid_prompt", "The prompt must be a non-empty object of nodes", type(prompt).__name__), [], {}
    if targets is not None:
        if not isinstance(targets, list) or not all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in targets):
            return False, _error("invalid_prompt", "partial_execution_targets must be a list of node ids",
                                 type(targets).__name__), [], {}
        targets = [str(t) for t in targets]
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                 f"Node ID '#{node_id}'"), [], {}
        if not isinstance(node["class_type"], str) or node["class_type"] not in registry:
            return False, _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not exist.",
                                 f"Node ID '#{node_id}'"), [], {}
        if getattr(registry[node["class_type"]], "OUTPUT_NODE", False) is True and (targets is None or node_id in targets):
            outputs.append(node_id)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {}
    validated: dict[str, tuple[bool, list[dict]]] = {}
    specs: dict[str, dict] = {}
    good: list[str] = []
    node_errors: dict[str, dict] = {}
    failures: list[str] = []
    for out in outputs:
        try:
            ok = _validate_node(prompt, out, registry, validated, specs)[0]
        except Exception as e:  # noqa: BLE001 - a broken INPUT_TYPES must not take the server down
            validated[out] = (False, [_error("exception_during_validation", "Exception when validating node", str(e),
                                             exception_type=type(e).__name__)])
            ok = False
        if ok:
            try:
                execution_order(prompt, [out])
            except CycleError as e:
                error = _error("dependency_cycle", "Dependency cycle detected", str(e), cycle=e.nodes)
                for node_id in e.nodes:
                    validated[node_id] = (False, [error])
                ok = False
        if ok:
            good.append(out)
            continue
        for node_id, (_, reasons) in validated.items():
            if reasons:
                entry = node_errors.setdefault(node_id, {"errors": reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                if out not in entry["dependent_outputs"]:
                    entry["dependent_outputs"].append(out)
                failures += [f"{r['message']}: {r['details']}" for r in reasons]
    if not good:
        return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                             "\n".join(dict.fromkeys(failures))), [], node_errors
    return True, None, good, node_errors


def _sources(prompt: dict, node_id: str) -> list[str]:
    inputs = prompt[node_id].get("inputs")
    values = inputs.values() if isinstance(inputs, dict) else ()
    return [str(v[0]) for v in values if is_link(v) and str(v[0]) in prompt]


def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """Node ids needed by ``outputs``, each after the nodes it links to (DFS topological
    order, without recursion: a long chain cannot overflow the stack).
    Raises :class:`CycleError` when the nodes link back to themselves."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for out in outputs:
        if state.get(out) == 2:
            continue
        state[out] = 1
        stack = [(out, iter(_sources(prompt, out)))]
        while stack:
            node_id, sources = stack[-1]
            for source in sources:
                if state.get(source) == 2:
                    continue
                if state.get(source) == 1:
                    path = [n for n, _ in stack]
                    raise CycleError(path[path.index(source) :])
                state[source] = 1
                stack.append((source, iter(_sources(prompt, source))))
                break
            else:
                stack.pop()
                state[node_id] = 2
                order.append(node_id)
    return order


def signatures(prompt: dict, order: list[str], changed: Mapping[str, Any]) -> dict[str, str]:
    """A cache key per node: its class, widget values, ``IS_CHANGED`` answer and the keys of
    the nodes it reads from (so a change upstream invalidates everything downstream)."""
    sigs: dict[str, str] = {}
    for node_id in order:
        node = prompt[node_id]
        inputs = {}
        for name, value in sorted(node.get("inputs", {}).items()):
            inputs[name] = ["link", sigs[str(value[0])], value[1]] if is_link(value) else value
        blob = json.dumps([node["class_type"], inputs, changed.get(node_id)], sort_keys=True, default=repr)
        sigs[node_id] = hashlib.sha256(blob.encode()).hexdigest()
    return sigs


def node_info(name: str, cls: type, display_name: str | None, python_module: str) -> dict:
    """``/object_info`` entry of a V1 node class, in ComfyUI's shape."""
    spec = cls.INPUT_TYPES()
    info = {
        "input": spec,
        "input_order": {k: list(v) for k, v in spec.items()},
        "output": list(cls.RETURN_TYPES),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": python_module,
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    return info
