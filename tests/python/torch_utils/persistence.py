"""Stand-in for EDM's `torch_utils.persistence`, written for difi's tests.

It pickles modules the way persistent classes do: as
`_reconstruct_persistent_obj(meta)` with `meta = dict(type='class', version,
module_src, class_name, state)`, where `state` is the module's `__dict__`
(holding `_parameters`, `_buffers`, `_modules`, `_init_args`, `_init_kwargs`).
difi reads such pickles without running any of this code.
"""

import torch

_version = 6


def _reconstruct_persistent_obj(meta):
    raise RuntimeError("stand-in persistence: pickles made for difi's tests are not meant to be loaded in Python")


class Persistent(torch.nn.Module):
    """A module that pickles as a persistent object of class `class_name`."""

    def __init__(self, class_name, **init_kwargs):
        super().__init__()
        self._stand_in_class_name = class_name
        self._init_args = ()
        self._init_kwargs = dict(init_kwargs)

    def __reduce__(self):
        fields = list(super().__reduce__())
        fields += [None] * max(3 - len(fields), 0)
        meta = dict(
            type="class",
            version=_version,
            module_src="# module source omitted by the stand-in\n",
            class_name=self._stand_in_class_name,
            state=fields[2],
        )
        return (_reconstruct_persistent_obj, (meta,), None)
