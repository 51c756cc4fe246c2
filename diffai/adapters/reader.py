"""The reader registry's entry for a PEFT LoRA adapter folder (``adapter_config.json`` +
``adapter_model.safetensors`` or ``.bin``), read as a model by ``diffai.adapters.folder``.

The registry asks every folder, and every model file, whether it is an adapter, and
every run asks both its models: this module answers without the adapter's dataclasses
and patterns, which ``folder`` builds only to read one (10 M instructions of a plain
run's 712 M; 5-8 ms of CPU at load 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffai.adapters.folder import AdapterModel
    from diffai.model import Model

FORMAT = "peft"
#: The file that makes a folder an adapter. The reader registry asks every folder, and
#: every model file, whether it is one: the config's parser and the factors are imported
#: only to read an adapter (5 ms of every run's start).
CONFIG_NAME = "adapter_config.json"
EXTENSIONS: tuple[str, ...] = ()


def matches(path: Path, head: bytes) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file()


def read(path: Path) -> AdapterModel:
    from diffai.adapters.folder import read_folder

    return read_folder(path)


def is_adapter(model: Model) -> bool:
    """Whether ``model`` is an adapter this reader read: only such a model has its format."""
    if model.format != FORMAT:
        return False
    from diffai.adapters.folder import AdapterModel

    return isinstance(model, AdapterModel) and model.adapter is not None
