"""Stand-in for StyleGAN2-ADA's `dnnlib.util`, written for difi's tests.

The reference pickles constructor arguments such as `mapping_kwargs` as
`dnnlib.util.EasyDict`, a dict subclass with attribute access; a pickle of
this class has the same shape (the class, then its items).
"""


class EasyDict(dict):
    """A dict whose items are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value
