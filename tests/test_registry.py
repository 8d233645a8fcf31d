"""Entry-point registry: the built-ins load through their entry points, lookups are case-insensitive, an unknown
name lists the known ones, and a broken plugin is reported by name without breaking the others."""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import entry_points

import pytest

from dcl import registry
from dcl.cli import main

BUILTIN_METHODS = {"AEKMeans", "DEC", "IDEC", "DEKM", "CM", "AECM", "DPGMM", "DCFAE", "SAE"}


def test_builtins_are_installed_entry_points_of_dcl():
    eps = {ep.name: ep for ep in entry_points(group="dcl.methods")}
    assert BUILTIN_METHODS <= set(eps)
    for name in BUILTIN_METHODS:
        assert eps[name].dist.name == "dcl" and eps[name].value.startswith("dcl.methods.")
        cls = registry.get_method(name)
        assert cls.__module__.startswith("dcl.methods.") and registry.describe(cls)
    assert {ep.name for ep in entry_points(group="dcl.datamodules")} >= {"Digits", "USPS", "MNIST", "COIL20"}


def test_lookup_ignores_case_and_separators_and_unknown_names_list_the_known():
    assert registry.get_method("dec") is registry.get_method("DEC")
    # the configs' folder names (configs/ae_kmeans/) and the papers' spellings (AE-CM) name the methods too
    assert registry.get_method("ae_kmeans") is registry.get_method("AEKMeans") is registry.get_method("ae-kmeans")
    assert registry.get_method("AE-CM") is registry.get_method("aecm") is registry.get_method("AE CM")
    with pytest.raises(registry.RegistryError, match=r"unknown method 'spectral'; known methods: .*DEC.*IDEC"):
        registry.get_method("spectral")
    with pytest.raises(registry.RegistryError, match=r"unknown method 'ae_kmean' \(did you mean 'AEKMeans'\?\); known"):
        registry.get_method("ae_kmean")


def _plugin_dist(folder, name: str, entry: str, module: str, code: str) -> None:
    """A distribution installed in ``folder``: its metadata, one dcl.methods entry point, and its module."""
    folder.mkdir()
    dist = folder / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[dcl.methods]\n{entry}\n")
    (folder / f"{module}.py").write_text(code)


def test_broken_plugin_is_reported_without_breaking_the_others(tmp_path, monkeypatch, capsys):
    _plugin_dist(tmp_path / "broken", "brokenplugin", "Broken = brokenplugin_mod:Broken", "brokenplugin_mod",
                 "raise ImportError('needs a package that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "broken"))
    registry.refresh()
    try:
        assert "Broken" in registry.load_errors("method")
        dec = registry.available("method")["DEC"]
        with pytest.raises(registry.RegistryError, match="'Broken' is registered but failed to import: .*needs a package"):
            registry.get_method("broken")
        capsys.readouterr()
        main(["list"])  # dcl list names it, and why, below the methods that load
        listed = capsys.readouterr().out.splitlines()
        assert listed.index("  Broken           [failed to import] brokenplugin_mod:Broken: ImportError: needs a "
                            "package that is not installed") > listed.index(f"  {'DEC':<16} {registry.describe(dec)}")
    finally:
        monkeypatch.undo()
        sys.modules.pop("brokenplugin_mod", None)
        registry.refresh()
    assert "Broken" not in registry.load_errors("method")


def test_the_first_of_two_plugins_of_one_name_wins_and_any_import_failure_is_isolated(tmp_path, monkeypatch):
    """As for imports, the distribution first on sys.path; a plugin whose entry point names a missing class (an
    AttributeError, not an ImportError) is reported as broken too; names are listed ignoring case."""
    _plugin_dist(tmp_path / "one", "twinone", "aeTwin = twin_one:Twin", "twin_one", "class Twin:\n    pass\n")
    _plugin_dist(tmp_path / "two", "twintwo", "aeTwin = twin_two:Twin", "twin_two", "class Twin:\n    pass\n")
    _plugin_dist(tmp_path / "three", "typo", "Typo = typo_mod:Missing", "typo_mod", "class Present:\n    pass\n")
    _plugin_dist(tmp_path / "four", "twinfour", "ae_twin = twin_four:Twin", "twin_four", "class Twin:\n    pass\n")
    for folder in ("four", "three", "two", "one"):
        monkeypatch.syspath_prepend(str(tmp_path / folder))  # one, two, three, four in that order
    registry.refresh()
    try:
        assert registry.available("method")["aeTwin"].__module__ == "twin_one"
        # two names of one key (case, '_' and '-' aside): the first listed is the one a lookup finds
        assert registry.get_method("AE-Twin").__module__ == "twin_four"
        assert registry.load_errors("method")["Typo"].startswith("typo_mod:Missing: AttributeError: ")
        names = list(registry.available("method"))
        assert names == sorted(names, key=str.lower) and names.index("aeTwin") == names.index("AEKMeans") + 1
    finally:
        monkeypatch.undo()
        for module in ("twin_one", "twin_two", "typo_mod", "twin_four"):
            sys.modules.pop(module, None)
        registry.refresh()


def test_description_is_the_first_sentence():
    class Example:
        """Deep thing (Doe et al. 2020), e.g. for digits.
        Second sentence here. More.

        Details."""

    assert registry.describe(Example) == "Deep thing (Doe et al. 2020), e.g. for digits."

    class Titled:
        """A title without a full stop

        Then the details. More."""

    assert registry.describe(Titled) == "A title without a full stop"


class _MyDEC(registry.get_method("DEC")):
    """The README's subclass pattern: a new setting, the parent's through ``**kwargs``."""

    def __init__(self, *args, mix: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.mix = mix


def test_settings_of_a_kwargs_subclass_include_the_inherited_ones():
    """Once the listing stopped at ``**kwargs``: 'MyDEC has no setting 'update_intervall'; its settings: mix'."""
    msg = registry.unknown_setting(_MyDEC, "update_intervall", hidden=("n_clusters", "input_shape"))
    assert msg.startswith("_MyDEC has no setting 'update_intervall' (did you mean 'update_interval'?); "
                          "its settings: mix, latent_dim,"), msg
    assert "n_clusters" not in msg and "kwargs" not in msg and "pretrain_epochs" in msg

    class Tuned(_MyDEC):  # a setting of the parent's given again (another default): listed once
        def __init__(self, *args, mix: float = 0.9, **kwargs):
            super().__init__(*args, mix=mix, **kwargs)

    assert registry.settings(Tuned) == registry.settings(_MyDEC)


def test_the_estimator_names_a_kwargs_subclass_setting_it_does_not_take():
    """Once a raw ``TypeError ... unexpected keyword argument`` from the constructor: the check skipped classes
    taking ``**kwargs``."""
    import numpy as np

    from dcl import DeepClusterer

    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"method_args: _MyDEC has no setting 'pretrain_epoch' \(did you mean "
                                         r"'pretrain_epochs'\?\); its settings: mix, latent_dim,"):
        DeepClusterer(method=_MyDEC, n_clusters=3, max_epochs=1, method_args={"pretrain_epoch": 3}).fit(X)


def _help_descriptions(cls: type) -> dict[str, str]:
    """The argument descriptions ``--model.help`` / ``--data.help`` show: jsonargparse parses the docstrings of the
    class and its bases with docstring_parser (base classes first, the class's own last), dropping any that fails."""
    import docstring_parser

    skip = {"abc", "attr", "attrs", "builtins", "enum", "pydantic", "typing", "typing_extensions"}  # jsonargparse's
    sources = [c for c in reversed(cls.__mro__[1:]) if c.__module__.split(".")[0] not in skip] + [cls.__init__, cls]
    docs: dict[str, str] = {}
    for source in sources:
        try:
            parsed = docstring_parser.parse(source.__doc__ or "", style=docstring_parser.DocstringStyle.AUTO)
        except docstring_parser.ParseError:
            continue
        docs.update({p.arg_name: p.description for p in parsed.params if p.description})
    return docs


@pytest.mark.parametrize("kind", ["method", "datamodule"])
def test_every_argument_of_every_plugin_is_described_in_its_help(kind):
    """DEC's, IDEC's, DEKM's and DPGMM's ``Args:`` held a line without a colon ("See ``AutoencoderMethod`` for
    ..."): docstring_parser (Google style) refused the whole section and ``--model.help DEC`` described nothing.
    Each Args entry names one argument: "a, b: ..." is read as one argument named "a, b"."""
    import docstring_parser

    for name, cls in registry.available(kind).items():
        for owner in cls.__mro__:
            if not owner.__module__.startswith(("dcl.methods.", "dcl.datamodules.")) or not owner.__doc__:
                continue
            parsed = docstring_parser.parse(owner.__doc__, style=docstring_parser.DocstringStyle.GOOGLE)
            unknown = [p.arg_name for p in parsed.params if p.arg_name not in registry.settings(owner)]
            assert not unknown, f"{owner.__name__}'s docstring describes arguments it does not take: {unknown}"
        docs = _help_descriptions(cls)
        undescribed = [p for p in registry.settings(cls) if not docs.get(p, "").strip()]
        assert not undescribed, f"{kind} {name}: no description of {undescribed}"


@pytest.mark.parametrize("kind", ["method", "datamodule"])
def test_each_docstring_opens_with_a_whole_sentence_on_one_line(kind):
    """``dcl fit --model.help X`` prints the docstring's first line only (jsonargparse's short description), so a
    sentence wrapped onto the next line was cut ("... on its code at each:", a user's pass); ``dcl list`` prints
    the first sentence of the first paragraph. Both must be the same whole sentence."""
    for name, cls in registry.available(kind).items():
        first = cls.__doc__.strip().splitlines()[0]
        assert first.endswith(".") and registry.describe(cls) == first, (name, first)


@pytest.mark.parametrize("name", sorted(BUILTIN_METHODS))
def test_every_method_hands_the_k_means_restarts_it_takes_to_its_base(name):
    """Every built-in runs k-means (an init, a score or its clusters) and repeats the base's kmeans_n_init in its own
    signature: one that dropped it on the way ran the base's default restarts (AEKMeans: a mutant passed every test)."""
    cls = registry.get_method(name)
    small = {"hidden_dims": (8,)} if "hidden_dims" in inspect.signature(cls).parameters else {}
    shape = (1, 16, 16) if name == "DCFAE" else (16,)  # (its networks take images)
    model = cls(n_clusters=4, input_shape=shape, kmeans_n_init=3, **small)
    assert model.kmeans_n_init == 3
