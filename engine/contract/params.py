"""How a tool is declared: its parameters, the rules between them, its outputs (stdlib only).

A tool's declaration (``engine.contract.tools``) is a :class:`Tool` holding
:class:`Param` values. Every face of the engine is derived from it:

- the CLI's argparse (``engine.cli.parser``): flags, types, defaults, help, groups;
- the checks before any work (:func:`check`): required values, types, choices,
  ranges, file suffixes, existing inputs, writable outputs, the rules between
  parameters. Each failure is a ``Problem(param, code, message)``; the CLI shows
  the flag, the dock marks the widget, Processing names its parameter;
- the command line a client builds (:func:`to_argv`) and its named values again (:func:`from_argv`: the
  plugin's remote runner sends them to the service);
- the plugin's Processing parameters (``plugin.processing.params``) and, next,
  the service's process descriptions.

Values travel as the CLI's text (``"64px"``, ``"2..12"``, ``"auto"``) or as
Python numbers; :func:`parse_value` turns either into the checked value.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import problems as P
from .limits import parse_k_values
from .outputs import size_tag, stem, tile_label
from .problems import Problem

# parameter types
INT, FLOAT, TEXT, BOOL, CHOICE = "int", "float", "text", "bool", "choice"
RASTER, VECTOR, FILE = "raster", "vector", "file"            # input files: a raster, a vector layer, any file
OUT_FILE, OUT_FOLDER = "out_file", "out_folder"              # outputs
FOLDER = "folder"                                            # a working folder the tool creates when missing (cache)
K_LIST, SIZE, SIZES, EXTENT, BANDS = "k_list", "size", "sizes", "extent", "bands"
TYPES = (INT, FLOAT, TEXT, BOOL, CHOICE, RASTER, VECTOR, FILE, OUT_FILE, OUT_FOLDER, FOLDER, K_LIST, SIZE, SIZES,
         EXTENT, BANDS)
INPUT_FILES = (RASTER, VECTOR, FILE)
PATHS = INPUT_FILES + (OUT_FILE, OUT_FOLDER, FOLDER)
NAME_MAX = 255                       # bytes in one file or folder name: the limit of common file systems
LENGTH_UNITS = ("px", "m")


class OutOfRange(ValueError):
    """A value of the right form outside what the engine accepts (a tile size below the minimum, a number
    beyond its bounds): :func:`check` gives it the code ``out_of_range`` whatever the parameter's type."""


@dataclass(frozen=True)
class Param:
    """One parameter of a tool.

    ``name`` is the Python name and, with dashes, the CLI flag (``tile_size`` ->
    ``--tile-size``). ``words`` are the special values a number parameter also
    takes (``"auto"``). ``minimum``/``maximum`` bound numbers (``open_min`` /
    ``open_max``: the bound itself is excluded); for a SIZE, ``minimum`` is in
    pixels. ``applies_when=("method", "deepcluster")`` marks a parameter that
    only matters with that value of another (CLI group, Processing algorithm,
    and left out of a command line otherwise). ``cli=False``: a Python-API-only
    parameter. ``many``: a raster that takes one or more paths (a study: the
    value is a path or a list of paths; ``nargs='+'`` on the CLI, an array on
    the service, "Further rasters" in Processing); ``study``: a raster that
    also takes a folder of rasters (``engine.raster.study``).
    """

    name: str
    type: str
    default: object = None
    help: str = ""
    label: str = ""
    unit: str | None = None
    choices: tuple = ()
    words: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False
    open_max: bool = False
    multiple_of: int | None = None
    suffixes: tuple = ()
    required: bool = False
    positional: bool = False
    negative_flag: str | None = None      # a BOOL whose default is True: the flag that turns it off
    group: str | None = None
    advanced: bool = False
    applies_when: tuple | None = None
    cli: bool = True                      # False: a field of the tool's params value only (Python API)
    api: bool = True                      # False: a CLI option only (--progress), not a params field
    service: bool = True                  # False: not an input of the service, whose server decides it (--dask)
    pattern: str | None = None            # a TEXT value must match this regular expression (whole value) ...
    form: str = ""                        # ... which says in words what it accepts: "'local:N' or 'tcp://host:port'"
    many: bool = False                    # a RASTER that takes several paths (one study): a path or a list of them
    study: bool = False                   # a RASTER that also takes a folder of rasters (a study); many implies it

    def __post_init__(self):
        assert self.type in TYPES, f"{self.name}: unknown type {self.type!r}"
        assert not (self.type == CHOICE and not self.choices), f"{self.name}: a choice needs choices"
        assert self.type != BOOL or self.default in (True, False), f"{self.name}: a flag defaults to True or False"
        assert self.pattern is None or (self.type == TEXT and self.form), f"{self.name}: a pattern is for TEXT, " \
                                                                          "with its form in words"
        assert not (self.many or self.study) or self.type == RASTER, f"{self.name}: only a raster makes a study"
        if self.many:
            object.__setattr__(self, "study", True)

    @property
    def flag(self) -> str:
        """``--tile-size``; a positional parameter's name in capitals (``RASTER``)."""
        if self.positional:
            return self.name.upper()
        if self.type == BOOL and self.default is True:
            return self.negative_flag or "--no-" + self.name.replace("_", "-")
        return "--" + self.name.replace("_", "-")

    @property
    def title(self) -> str:
        """The label for a form, or the name in words."""
        return self.label or self.name.replace("_", " ").capitalize()

    def range_text(self) -> str:
        """``between 2 and 254``, ``at least 1``, ``from 0 up to (not including) 1``; '' without bounds."""
        lo, hi = self.minimum, self.maximum
        fmt = (lambda v: f"{v:g}") if self.type in (FLOAT,) else (lambda v: f"{int(v)}" if v == int(v) else f"{v:g}")
        if lo is not None and hi is not None:
            low = f"more than {fmt(lo)}" if self.open_min else f"from {fmt(lo)}"
            high = f"less than {fmt(hi)}" if self.open_max else f"at most {fmt(hi)}"
            if not (self.open_min or self.open_max):
                return f"between {fmt(lo)} and {fmt(hi)}"
            return f"{low} and {high}"
        if lo is not None:
            return f"more than {fmt(lo)}" if self.open_min else f"at least {fmt(lo)}"
        if hi is not None:
            return f"at most {fmt(hi)}"
        return ""


@dataclass(frozen=True)
class Rule:
    """A rule between parameters, checked after each one's own checks.

    kinds: ``requires`` (when ``params[0]`` is given, ``params[1]`` must be too),
    ``one_of`` (exactly one of ``params`` is given), ``any_of`` (at least one),
    ``smaller`` (the length ``params[0]`` is below the smallest of the lengths
    ``params[1]`` when both are in the same unit: an overlap and its tile size).
    """

    kind: str
    params: tuple
    message: str


@dataclass(frozen=True)
class Output:
    """A file a tool writes, named from its output path: ``pattern`` uses ``{out}`` (the path as given),
    ``{stem}`` (without suffix) and, for ``per_size`` outputs, ``{tag}`` (one per tile size: 2.5m -> 2_5m).
    ``when``: the parameter (or ``"stats"``: any statistics input) that makes the tool write it."""

    key: str
    pattern: str
    help: str = ""
    when: str | None = None
    per_size: bool = False


@dataclass(frozen=True)
class Tool:
    """One engine tool: ``python -m engine NAME``. ``stages`` maps each progress stage to its share of the bar
    (percent) for tools whose stages run once each; ``outputs`` name its files; ``examples`` are CLI lines;
    ``quick``: it answers in seconds (it prints JSON and writes nothing), so a service may run it while the client
    waits."""

    name: str
    summary: str
    description: str
    params: tuple
    rules: tuple = ()
    outputs: tuple = ()
    output_param: str | None = "out"
    stages: dict = field(default_factory=dict)
    examples: tuple = ()
    notes: str = ""
    quick: bool = False                   # runs in seconds: the service also executes it synchronously

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter {name!r}")

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def flag(self, name: str) -> str:
        """The CLI flag of a parameter (or the name itself for one the tool does not have: ``engine``)."""
        try:
            return self.param(name).flag
        except KeyError:
            return name


# --------------------------------------------------------------------------- parsing values


def parse_length(text, minimum: float | None = None) -> tuple[float, str]:
    """``'64px'``, ``'64'``, ``'20m'``, ``'12.5 m'`` -> ``(value, unit)``; ValueError with the fix.

    Pixel lengths are whole numbers. ``minimum`` (pixels) applies to pixel lengths;
    metre lengths must then be more than 0 (their pixels depend on the raster).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), "px"
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(px|m)?\s*", str(text))
        if not m:
            raise ValueError(f"{text!r} is not a length: write pixels as '64px' or ground metres as '20m'.")
        value, unit = float(m.group(1)), m.group(2) or "px"
    if unit == "px" and value != int(value):
        raise ValueError(f"{text!r}: pixel lengths are whole numbers, e.g. '64px'.")
    if minimum:
        if unit == "px" and value < minimum:
            raise OutOfRange(f"{text!r}: tiles need at least {int(minimum)} px.")
        if value <= 0:
            raise OutOfRange(f"{text!r}: a size must be more than 0.")
    return value, unit


def parse_lengths(text, minimum: float | None = None) -> list[str]:
    """``'32px,64px,128px'`` (or a list) -> distinct normalised labels (``'64px'``, ``'2.5m'``) in the order given."""
    if isinstance(text, (list, tuple)):
        text = ",".join(str(v) for v in text)
    tokens = [t.strip() for t in str(text or "").split(",")]
    if not any(tokens) or not all(tokens):
        raise ValueError(f"{text!r}: give one or more sizes separated by commas, e.g. '32px,64px,128px'.")
    out: list[str] = []
    for token in tokens:
        label = tile_label(*parse_length(token, minimum))
        if label not in out:
            out.append(label)
    return out


def parse_extent(text) -> tuple[float, float, float, float]:
    """``'xmin,ymin,xmax,ymax'`` (or four numbers) -> a tuple; ValueError unless xmin < xmax and ymin < ymax."""
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ValueError(f"{text!r}: write the extent as xmin,ymin,xmax,ymax in the raster's CRS.")
    if not (values[0] < values[2] and values[1] < values[3]):
        raise ValueError(f"{text!r}: xmin must be below xmax and ymin below ymax.")
    return values


def parse_bands(text) -> list[int]:
    """``'1,2,3'``, ``'4'`` (or a list) -> 1-based band numbers (whether the raster has them is checked on it)."""
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).split(",")
    try:
        bands = [int(str(v).strip()) for v in parts]
    except ValueError:
        bands = []
    if not bands or min(bands) < 1:
        raise ValueError(f"{text!r}: give 1-based band numbers separated by commas, e.g. '1,2,3'.")
    return bands


def parse_value(param: Param, value):
    """The checked value of ``param`` from CLI text or a Python value; ValueError with a message for the user.

    None (not given) stays None. Numbers are bounded by ``minimum``/``maximum``.
    """
    if value is None:
        return None
    if isinstance(value, str) and value in param.words:
        return value
    if param.many and isinstance(value, (list, tuple)):
        items = [parse_value(replace(param, many=False), v) for v in value]
        if not items:
            raise ValueError("give one raster or more.")
        return items[0] if len(items) == 1 else items
    t = param.type
    if t == BOOL:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not true or false.")
    if t in (INT, FLOAT):
        try:
            number = float(value) if t == FLOAT else _whole(value)
        except (TypeError, ValueError, OverflowError):
            kind = "a number" if t == FLOAT else "a whole number"
            also = f" or {' or '.join(param.words)}" if param.words else ""
            raise ValueError(f"{value!r} is not {kind}{also}.") from None
        if not math.isfinite(number):
            fix = f"; give a value {param.range_text()}" if param.range_text() else ""
            raise ValueError(f"{value!r} is not a finite number{fix}.")
        low, high = param.minimum, param.maximum
        if (low is not None and (number < low or (param.open_min and number == low))) or \
           (high is not None and (number > high or (param.open_max and number == high))):
            unit = f" {param.unit}" if param.unit else ""
            raise OutOfRange(f"{value}{unit} is out of range: give a value {param.range_text()}.")
        if param.multiple_of and int(number) % param.multiple_of:
            raise OutOfRange(f"{value} is not a multiple of {param.multiple_of}.")
        return number
    if t == CHOICE:
        if value not in param.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, param.choices))}.")
        return value
    if t == K_LIST:
        if isinstance(value, (list, tuple)):
            value = ",".join(str(int(v)) for v in value)
        return parse_k_values(str(value))
    if t == SIZE:
        return tile_label(*parse_length(value, param.minimum))
    if t == SIZES:
        return parse_lengths(value, param.minimum)
    if t == EXTENT:
        return parse_extent(value)
    if t == BANDS:
        return parse_bands(value)
    text = str(value)
    if param.pattern and not re.fullmatch(param.pattern, text):
        raise ValueError(f"{text!r} is not {param.form}.")
    if t in INPUT_FILES + (OUT_FILE,) and param.suffixes and not text.lower().endswith(param.suffixes):
        raise ValueError(f"{text!r} must end in {' or '.join(param.suffixes)}.")
    return text


def _whole(value) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, float):
        if value != int(value):
            raise ValueError
        return int(value)
    return int(str(value).strip())


# --------------------------------------------------------------------------- checks


def is_given(param: Param, value) -> bool:
    """A value the user chose: not None, not '' and, for a flag, not its default."""
    if param.type == BOOL:
        return bool(value) != bool(param.default)
    if isinstance(value, (list, tuple)) and param.many:
        return any(v is not None and v != "" for v in value)
    return value is not None and value != ""


def applies(param: Param, values: dict) -> bool:
    """Whether ``param`` matters for these values (``applies_when``)."""
    if not param.applies_when:
        return True
    other, wanted = param.applies_when
    return values.get(other) == wanted


def _code_of(param: Param) -> str:
    if param.type in (INT, FLOAT):
        return P.OUT_OF_RANGE
    if param.type == CHOICE:
        return P.BAD_CHOICE
    return P.BAD_FORMAT


def check(tool: Tool, values: dict, files: bool = True) -> list[Problem]:
    """What stops ``tool`` from running with ``values`` (parameter name -> value; missing: the default).

    Each parameter's own checks (numbers finite and in range), then the rules
    between parameters, then (with ``files``) the file checks: names no file
    system takes (NUL, more than NAME_MAX bytes, also for the files named after
    the output), inputs that do not exist, output folders that do not exist or
    cannot be written, output files that are folders, outputs that exist without
    ``overwrite``, a working folder (``FOLDER``) that is or lies under a file, and
    an output that would replace an input. Never an exception for a path: an
    OSError on the way is a problem too. At most one problem per parameter, in
    declaration order.
    """
    full = {**tool.defaults(), **{k: v for k, v in values.items() if k in tool.names()}}
    found: dict[str, Problem] = {}
    for param in tool.params:
        value = full.get(param.name)
        if not is_given(param, value):
            if param.required:
                found[param.name] = Problem(param.name, P.REQUIRED, f"{param.title}: give a value (required).")
            continue
        if not applies(param, full):
            continue
        try:
            parse_value(param, value)
        except ValueError as exc:
            code = P.OUT_OF_RANGE if isinstance(exc, OutOfRange) else _code_of(param)
            found[param.name] = Problem(param.name, code, f"{param.title}: {exc}")
    for rule in tool.rules:
        given = [is_given(tool.param(n), full.get(n)) for n in rule.params]
        broken = ((rule.kind == "requires" and given[0] and not given[1])
                  or (rule.kind == "one_of" and sum(given) != 1)
                  or (rule.kind == "any_of" and not any(given))
                  or (rule.kind == "smaller" and not any(n in found for n in rule.params)
                      and not _smaller(full[rule.params[0]], full[rule.params[1]])))
        name = rule.params[1] if rule.kind == "requires" else rule.params[0]
        if broken and name not in found:
            code = {"smaller": P.OUT_OF_RANGE, "one_of": P.BAD_FORMAT if any(given) else P.REQUIRED}.get(
                rule.kind, P.REQUIRED)
            found[name] = Problem(name, code, rule.message)
    if files:
        for param in tool.params:
            if param.name in found or not is_given(param, full.get(param.name)) or not applies(param, full):
                continue
            for path in paths_of(full[param.name]):
                try:
                    problem = _name_problem(tool, param, path, full) or _file_problem(tool, param, path, full)
                except OSError as exc:             # a folder on the way that cannot be read, a name the OS refuses
                    problem = Problem(param.name, P.NOT_FOUND, f"{param.title}: {path} cannot be reached "
                                                               f"({exc.strerror or exc}); choose another.")
                if problem:
                    found[param.name] = problem
                    break
        clash = input_clash(tool, full)
        if clash and (clash.param not in found or found[clash.param].code == P.EXISTS):
            found[clash.param] = clash
    order = {n: i for i, n in enumerate(tool.names())}
    return sorted(found.values(), key=lambda p: order.get(p.param, len(order)))


def paths_of(value) -> list[str]:
    """The paths of a value: one path, or each of a list (a study of several rasters)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: after symlinks and, where the file system ignores case, in any case."""
    if os.path.exists(a) and os.path.exists(b):         # (False, not an error, for a name the OS refuses)
        try:
            return a.samefile(b)
        except OSError:
            return False
    ra, rb = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    if ra == rb:
        return True
    return ra.parent == rb.parent and ra.name.casefold() == rb.name.casefold() and _ignores_case(ra.parent)


def _ignores_case(folder: Path) -> bool:
    """Whether ``folder``'s file system treats names that differ only in case as one (macOS, Windows)."""
    try:
        entries = [e for e in os.listdir(folder) if e.swapcase() != e]
    except OSError:
        return False
    return bool(entries) and (folder / entries[0].swapcase()).exists()


def input_clash(tool: Tool, values: dict) -> "Problem | None":
    """An output of the run that is one of its inputs (or the folder of files it would write over one).

    Checked with and without ``overwrite``: replacing an input with a result
    loses the analyst's data, whatever the flag says. A tool whose output path
    is itself an input (``stats`` adds to RUN.gpkg) is not refused for it.
    """
    full = {**tool.defaults(), **values}
    # a tool whose output is an input (stats adds to RUN.gpkg) updates that one in place: only the others count
    inputs = [(p, Path(path)) for p in tool.params
              if p.type in INPUT_FILES and is_given(p, full.get(p.name)) and applies(p, full)
              and p.name != tool.output_param          # stats rewrites its run in place: that is its output
              for path in paths_of(full[p.name]) if path not in p.words]
    if not inputs:
        return None
    main = tool.output_param or "out"
    outputs = [(main, f) for f in output_files(tool, full).values()]
    for p in tool.params:
        if p.type == OUT_FILE and is_given(p, full.get(p.name)) and p.name != tool.output_param:
            outputs.append((p.name, Path(str(full[p.name]))))  # --save-model and the like
    for name, out in outputs:
        for param, path in inputs:
            if _same_file(out, path):
                return Problem(name, P.CLASHES, f"{out.name} would replace the input {param.title.lower()} "
                                                f"{path}; choose another output name.")
    return None


def _smaller(length, sizes) -> bool:
    """Whether ``length`` is below every size of ``sizes`` in its unit (True when no size shares its unit)."""
    try:
        value, unit = parse_length(length)
        same = [v for v, u in (parse_length(t) for t in parse_lengths(sizes)) if u == unit]
    except ValueError:
        return True
    return all(value < v for v in same)


def _too_long(path) -> "str | None":
    """The first name in ``path`` longer than file systems allow (NAME_MAX bytes), or None."""
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return part
    return None


def _name_problem(tool: Tool, param: Param, path: str, values: dict) -> "Problem | None":
    """A path, or a file named after an output path, with a name no file system takes (a NUL character, more
    than NAME_MAX bytes: ENAMETOOLONG)."""
    if param.type not in PATHS or path in param.words:
        return None
    if "\x00" in path:
        return Problem(param.name, P.BAD_FORMAT, f"{param.title}: {path!r} holds a NUL character, which no file "
                                                 "name can; choose another.")
    names = [path]
    if param.name == tool.output_param:
        names += [str(f) for f in output_files(tool, values).values()]
    for name in names:
        part = _too_long(name)
        if part:
            what = "its name" if name == path else f"the output {Path(name).name[:24]}..."
            return Problem(param.name, P.BAD_FORMAT,
                           f"{param.title}: {what} is {len(os.fsencode(part))} bytes long (a file system takes at "
                           f"most {NAME_MAX}: {part[:24]}...); choose a shorter name.")
    return None


def _folder_problem(param: Param, path: str) -> "Problem | None":
    """A working folder (the feature cache) that is a file, lies under a file, or cannot be written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        return Problem(param.name, P.NOT_FOLDER, f"{param.title}: {path} is a file; choose a folder.")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Problem(param.name, P.NOT_FOLDER, f"{param.title}: {existing} is a file, so {path} cannot be a "
                                                 "folder; choose another.")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Problem(param.name, P.NOT_WRITABLE, f"{param.title}: the folder {existing} is not writable; "
                                                     "choose another.")
    return None


def _file_problem(tool: Tool, param: Param, path: str, values: dict) -> "Problem | None":
    if param.type == FOLDER:
        return _folder_problem(param, path)
    if param.type in INPUT_FILES:
        if param.words and path in param.words:
            return None
        if not Path(path).exists():
            return Problem(param.name, P.NOT_FOUND, f"{param.title}: {path} does not exist.")
        return None
    if param.type not in (OUT_FILE, OUT_FOLDER):
        return None
    target = Path(path)
    if param.type == OUT_FOLDER and target.exists() and not target.is_dir():
        return Problem(param.name, P.NOT_FOLDER, f"{param.title}: {path} is a file; choose a folder.")
    if param.type == OUT_FILE:
        named = [target] + (list(output_files(tool, values).values()) if param.name == tool.output_param else [])
        folder_in_the_way = next((f for f in named if f.is_dir()), None)
        if folder_in_the_way is not None:
            return Problem(param.name, P.IS_FOLDER, f"{param.title}: {folder_in_the_way} is a folder; give another "
                                                    "file name.")
    folder = target.parent if param.type == OUT_FILE else (target if target.is_dir() else target.parent)
    if not folder.is_dir():
        return Problem(param.name, P.NOT_FOUND, f"{param.title}: the folder {folder} does not exist.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return Problem(param.name, P.NOT_WRITABLE, f"{param.title}: the folder {folder} is not writable; "
                                                     "choose another.")
    if param.name == tool.output_param and not values.get("overwrite"):
        taken = [f for f in output_files(tool, values).values() if f.exists()]
        if taken:
            return Problem(param.name, P.EXISTS, f"{taken[0]} already exists; choose another name or overwrite.")
    return None


# --------------------------------------------------------------------------- outputs and command lines


def output_files(tool: Tool, values: dict, sizes: "list[str] | None" = None) -> dict[str, Path]:
    """The files ``tool`` writes for ``values`` (those its options turn on), keyed as declared.

    Per-size outputs need the tile size labels (``sizes``; default: the
    ``tile_size`` value parsed as a list) and are keyed ``<key>_<label>``.
    """
    full = {**tool.defaults(), **values}
    out = full.get(tool.output_param) if tool.output_param else None
    if not out:
        return {}
    files: dict[str, Path] = {}
    for o in tool.outputs:
        if not _wanted(tool, o.when, full):
            continue
        if o.per_size:
            labels = sizes if sizes is not None else _sizes_of(full)
            for label in labels:
                files[f"{o.key}_{label}"] = Path(o.pattern.format(out=out, stem=stem(out), tag=size_tag(label)))
        else:
            files[o.key] = Path(o.pattern.format(out=out, stem=stem(out)))
    return files


def _sizes_of(values: dict) -> list[str]:
    try:
        return parse_lengths(values.get("tile_size") or "")
    except ValueError:
        return []


def _wanted(tool: Tool, when: "str | None", values: dict) -> bool:
    if when is None:
        return True
    if when == "stats":
        return any(values.get(n) for n in STATS_INPUTS if n in tool.names())
    if when.startswith("!"):
        return not values.get(when[1:])
    return bool(values.get(when))


STATS_INPUTS = ("buildings", "roads", "population", "nir_band")


def to_argv(tool: Tool, values: dict) -> list[str]:
    """``[tool, positionals..., --flag value ...]`` for the values that differ from the defaults.

    Parameters that do not apply (``applies_when``) and Python-only ones are left out.
    """
    full = {**tool.defaults(), **values}
    args = [tool.name]
    for param in tool.params:
        if param.positional:
            args += paths_of(full[param.name]) if param.many else [str(full[param.name])]
    for param in tool.params:
        value = full.get(param.name)
        if param.positional or not param.cli or not applies(param, full):
            continue
        if param.type == BOOL:
            if bool(value) != bool(param.default):
                args.append(param.flag)
            continue
        if value is None or value == "" or (value == param.default and not param.required):
            continue
        args += [param.flag, format_value(param, value)]
    return args


def from_argv(tool: Tool, argv: list[str]) -> dict:
    """The named values of a command line ``to_argv`` built (its inverse): ``[tool, positionals..., --flag value]``
    -> ``{name: value}``; the tool's name first is optional.

    Values stay as the CLI's text (``"64px"``, ``"6"``); a flag gives the boolean it sets (``--no-quicklook`` ->
    ``quicklook: False``). ``--flag=value`` is read too; a later flag wins, as with argparse. Parameters the command
    line does not give are absent (their defaults apply). ValueError for an unknown option, a missing value or a
    missing or extra positional argument.
    """
    args = list(argv)
    if args and args[0] == tool.name:
        args = args[1:]
    options = {p.flag: p for p in tool.params if p.cli and not p.positional}
    positionals = [p for p in tool.params if p.positional]
    values: dict = {}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        flag, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if flag not in options:
            if token.startswith("--"):
                raise ValueError(f"{tool.name}: unknown option {flag}")
            if not positionals:
                raise ValueError(f"{tool.name}: unexpected argument {token!r}")
            if positionals[0].many:                    # takes every positional token that follows
                name = positionals[0].name
                values[name] = [*paths_of(values[name]), token] if name in values else token
                continue
            values[positionals.pop(0).name] = token
            continue
        param = options[flag]
        if param.type == BOOL:
            if eq:
                raise ValueError(f"{tool.name}: {flag} takes no value")
            values[param.name] = not param.default
            continue
        if not eq:
            if i >= len(args):
                raise ValueError(f"{tool.name}: {flag} needs a value")
            inline = args[i]
            i += 1
        values[param.name] = inline
    if positionals and not (positionals[0].many and positionals[0].name in values):
        raise ValueError(f"{tool.name}: {positionals[0].flag} is missing")
    return values


def format_value(param: Param, value) -> str:
    """A value as the CLI reads it: ``2.5`` -> ``'2.5'``, ``(1, 2, 3, 4)`` -> ``'1.0,2.0,3.0,4.0'``, lists joined."""
    if isinstance(value, (list, tuple)):
        return ",".join(repr(float(v)) if param.type == EXTENT else str(v) for v in value)
    if isinstance(value, float):
        return str(int(value)) if param.type == INT else repr(value)
    return str(value)
