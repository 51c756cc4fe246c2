"""What to tell a user whose checkpoint names a pickle global the allow-list refuses.

A refusal has three different causes, and each needs its own advice:

- a whole pickled object (``torch.save(model)``, a user class): saving the
  state dict instead is the fix;
- a torch internal that a state dict may hold but diffai does not read yet
  (nested tensors, tensor subclasses):
  the file is fine, and telling its author to "save the state dict" would be
  wrong, since it already is one;
- anything else (``os.system``, ``builtins.eval``): calling it is how a pickle
  runs code, which is why it is refused.

``TORCH_INTERNALS`` names the torch globals of the second kind, as data, so a
reader that learns one takes its entry out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: Quantized tensors are read (``quantized.py``); torch never writes these schemes.
_QUANTIZATION_SCHEMES = ("per_tensor_symmetric", "per_channel_symmetric")

#: Globals torch's own weights-only loader accepts that diffai's allow-list does not know yet.
TORCH_INTERNALS: dict[str, str] = {
    **{f"torch.{name}": "a symmetric quantization scheme" for name in _QUANTIZATION_SCHEMES},
    "torch._utils._rebuild_sparse_csr_tensor": "a sparse tensor in torch's old CSR layout",
    "torch._utils._rebuild_nested_tensor": "a nested tensor",
    "torch._utils._rebuild_wrapper_subclass": "a tensor subclass",
    "torch._tensor._rebuild_from_type_v2": "a tensor subclass or a tensor with attributes",
    "torch._utils._rebuild_meta_tensor_no_storage": "a meta tensor (one without values)",
    "torch._utils._rebuild_device_tensor_from_numpy": "a tensor saved from an accelerator",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": "a tensor saved from an accelerator",
    "torch._utils._rebuild_tensor": "a tensor in torch's oldest layout",
    # Read from zip files (``packed.py``); torch's weights-only loader refuses it in legacy ones.
    "torch.ScriptObject": "a TorchScript object (such as a dynamic quantized LSTM's weights)",
    "torch._C.ScriptObject": "a TorchScript object",
}
#: Where torch keeps its layers: ``torch.save(model)`` pickles these classes.
MODULE_PREFIXES = ("torch.nn.", "torch.ao.nn.")
#: Protocol 2 spells ``builtins`` and ``copyreg`` as Python 2 did.
_PYTHON2_STDLIB = frozenset({"__builtin__", "copy_reg"})

_WHOLE_MODULE = "the file is a whole pickled nn.Module, not a state dict"
_WHOLE_OBJECT = "the file pickles a whole Python object, not a state dict"
_STATE_DICT = "save model.state_dict() instead; nothing was executed"
_RUNS_CODE = "loading it would run code; nothing was executed"


def refusal_problem(global_name: str) -> str:
    """The whole message for a refused ``global_name``, true to which of the three it is."""
    what = TORCH_INTERNALS.get(global_name)
    if what is not None:
        return (
            f"it holds {what} (pickled global {global_name!r}), which diffai does not read "
            "yet; nothing was executed"
        )
    reason = next((text for test, text in _REASONS if test(global_name)), _RUNS_CODE)
    return f"refused to load pickled global {global_name!r} (not on the allow-list): {reason}"


def _is_torch_module(global_name: str) -> bool:
    return global_name.startswith(MODULE_PREFIXES)


def _is_standard_library(global_name: str) -> bool:
    top = global_name.partition(".")[0]
    return top in sys.stdlib_module_names or top in _PYTHON2_STDLIB


def _is_class(global_name: str) -> bool:
    """Classes are capitalised by convention: a user's ``Net`` or ``_Net``, a library's ``Adam``."""
    return global_name.rpartition(".")[2].lstrip("_")[:1].isupper()


#: In order: the first test that holds gives the reason; none gives ``_RUNS_CODE``.
_REASONS: tuple[tuple[Callable[[str], bool], str], ...] = (
    (_is_torch_module, f"{_WHOLE_MODULE}; {_STATE_DICT}"),
    (_is_standard_library, _RUNS_CODE),
    (_is_class, f"{_WHOLE_OBJECT}; {_STATE_DICT}"),
)
