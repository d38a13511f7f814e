"""The models behind one interface: v1 and v2 are siblings, chosen by name.

Each model has a parameters class (the formulas and options it adds), a step-by-step reference
(the oracle) and runs on the shared fast engine. A store names its model in its attributes, so
every reader, ``update`` and ``sweep`` continue it with its own model.
"""

from __future__ import annotations

from ..errors import InputError

DEFAULT_MODEL = "v2"
MODEL_NAMES = ("v1", "v2")


def params_class(model: str):
    """The parameters class of a model name."""
    if model == "v1":
        from .v1.params import Params

        return Params
    if model == "v2":
        from .v2.params import ParamsV2

        return ParamsV2
    raise InputError(f"--model {model!r}: is not one of {', '.join(MODEL_NAMES)}")


def default_params(model: str = DEFAULT_MODEL):
    """The model's parameters at MODEL.md's defaults."""
    return params_class(model)()


def params_from_attrs(attrs: dict):
    """The parameters a store was estimated with (stores without ``model`` are v1)."""
    return params_class(attrs.get("model", "v1")).from_attrs(attrs)


def reference(params):
    """The step-by-step reference of the model of ``params``: ``f(series, params, grid, every)``."""
    if params.model == "v2":
        from .v2.reference import reference_estimate_v2

        return reference_estimate_v2
    from .v1.reference import reference_estimate

    return reference_estimate


def params_from_options(model: str | None = None, *, leverages=None, weights=None, bands=None,
                        churn=None, mmr=None, entry=None, side_split=None, closure=None,
                        max_age=None):
    """Parameters from command-line style options; ``None`` keeps the model's default.

    An option the chosen model does not have is an error naming it.

    Examples
    --------
    >>> params_from_options("v2", churn=0.5).churn
    0.5
    >>> params_from_options("v1", churn=0.5)
    Traceback (most recent call last):
    ...
    liqgpu.errors.InputError: --churn: model v1 has no churn; use --model v2
    """
    model = model or DEFAULT_MODEL
    cls = params_class(model)
    opts = {k: v for k, v in dict(leverages=leverages, weights=weights, mmr=mmr, entry=entry,
                                  side_split=side_split, closure=closure,
                                  max_age=max_age).items() if v is not None}
    if model == "v1":
        for name, value in (("--bands", bands), ("--churn", churn)):
            if value is not None:
                raise InputError(f"{name}: model v1 has no {name[2:]}; use --model v2")
        for name in ("leverages", "weights"):
            v = opts.get(name)
            if isinstance(v, str):
                if ":" in v:
                    raise InputError(f"--{name} {v}: model v1 takes a comma-separated list; "
                                     f"log:/power: forms are model v2's")
                try:
                    opts[name] = tuple(float(x) for x in v.split(",") if x.strip())
                except ValueError:
                    raise InputError(f"--{name} {v!r}: must be numbers separated by "
                                     "commas") from None
        if isinstance(opts.get("entry"), str) and opts["entry"].startswith("range"):
            raise InputError(f"--entry {opts['entry']}: range:N entries are model v2's; "
                             "use --model v2")
    else:
        if bands is not None:
            opts["bands"] = bands
        if churn is not None:
            opts["churn"] = churn
    return cls(**opts)
