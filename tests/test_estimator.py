"""DeepClusterer: scikit-learn's own estimator checks, a Pipeline, reproducibility, the fitted attributes."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import dcl
from dcl.estimator import DeepClusterer, InMemory
from conftest import DCFAE_TINY

# The smallest budget that still learns: a one-hidden-layer autoencoder, one pretraining epoch, DEC after it.
TINY = dict(hidden_dims=[16], latent_dim=2, pretrain_epochs=1, update_interval=2, kmeans_n_init=2)


def tiny(**kw) -> DeepClusterer:
    params = dict(method="dec", n_clusters=3, max_epochs=3, batch_size=16, random_state=0, method_args=TINY)
    params.update(kw)
    return DeepClusterer(**params)


# Checks that cannot apply to a deep clusterer, by name, with the reason. The properties they test are
# tested below with n_clusters >= 2 where they make sense.
N_CLUSTERS_1 = ("sets n_clusters=1; a deep clustering method needs n_clusters >= 2 (ClusteringMethod raises "
                "ConfigError): with one cluster there is no clustering loss to train")
EXPECTED_FAILED = {  # xfail_strict: a check listed here that starts passing fails the suite, so the list stays true
    "check_dont_overwrite_parameters": N_CLUSTERS_1,
    "check_fit2d_predict1d": N_CLUSTERS_1,
    "check_methods_subset_invariance": N_CLUSTERS_1,
    "check_fit2d_1feature": N_CLUSTERS_1,
}


# scikit-learn 1.6 and 1.7 (supported: pyproject.toml) have no xfail_strict: there the list is checked unstrictly
STRICT = {"xfail_strict": True} if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {}


@parametrize_with_checks([tiny()], expected_failed_checks=lambda est: EXPECTED_FAILED, **STRICT)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n=60, centers=3, seed=1):
    X, y = make_blobs(n_samples=n, centers=centers, n_features=4, random_state=seed)
    return X, y


# -- what the n_clusters=1 checks test, with n_clusters >= 2 ---------------------------------------------------
def test_float32_samples_are_trained_on_without_a_copy(monkeypatch):
    """``fit`` copied X into a new tensor (``torch.tensor``), so that the data set was held twice for the whole fit
    (1,000,000 x 50 float32: 200 MB more). A writable float32 X is served as it is; other dtypes and read-only
    arrays (a memory-mapped .npy) are copied, without a warning, to the same fit."""
    import warnings

    served = []
    load = InMemory.load

    def spy(self):
        x, y = load(self)
        served.append(x)
        return x, y

    monkeypatch.setattr(InMemory, "load", spy)
    X = make_blobs(90, 4, centers=3, random_state=0)[0].astype(np.float32)
    labels = tiny().fit(X).labels_
    assert np.shares_memory(served[-1].numpy(), X)
    read_only = X.copy()
    read_only.setflags(write=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writ")  # torch: "The given NumPy array is not writable"
        assert np.array_equal(tiny().fit(read_only).labels_, labels)
    assert not np.shares_memory(served[-1].numpy(), read_only)
    assert np.array_equal(tiny().fit(X.astype(np.float64)).labels_, labels)
    assert not np.shares_memory(served[-1].numpy(), X)


def test_subset_invariance_and_1d_input():
    X, _ = blobs()
    est = tiny().fit(X)
    full_labels, full_z = est.predict(X), est.transform(X)
    np.testing.assert_array_equal(est.predict(X[:10]), full_labels[:10])
    np.testing.assert_allclose(est.transform(X[10:20]), full_z[10:20], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2D|Expected"):
        est.predict(X[0])
    with pytest.raises(ValueError, match="4 features"):
        est.predict(X[:, :3])


def test_one_feature_and_params_untouched():
    X = np.random.RandomState(0).normal(size=(30, 1))
    est = tiny(n_clusters=2)
    before = {k: v for k, v in est.__dict__.items()}
    est.fit(X)
    assert est.predict(X).shape == (30,)
    public_new = [k for k in est.__dict__ if k not in before and not k.endswith("_") and not k.startswith("_")]
    assert public_new == []
    assert est.method_args is TINY and TINY == dict(hidden_dims=[16], latent_dim=2, pretrain_epochs=1,
                                                    update_interval=2, kmeans_n_init=2)


# -- the estimator's own contract -----------------------------------------------------------------------------
def test_fitted_attributes_and_labels_equal_predict():
    X, y = blobs()
    est = tiny().fit(X)
    assert est.labels_.dtype == np.int64 and est.labels_.shape == (60,)
    np.testing.assert_array_equal(est.labels_, est.predict(X))
    assert est.cluster_centers_.shape == (3, 2) and est.n_clusters_ == 3
    z = est.transform(X)
    assert z.shape == (60, 2) and z.dtype == np.float32
    assert list(est.get_feature_names_out()) == ["deepclusterer0", "deepclusterer1"]
    assert adjusted_rand_score(y, est.labels_) > 0.5  # well separated blobs


def test_same_seed_same_labels_other_seed_runs():
    X, _ = blobs()
    a = tiny(random_state=3).fit_predict(X)
    b = tiny(random_state=3).fit_predict(X)
    np.testing.assert_array_equal(a, b)
    est = tiny(random_state=None)
    assert est.fit(X).labels_.shape == (60,)


def test_random_state_none_draws_another_seed_each_fit_from_numpys_global_rng(monkeypatch):
    """Found by an audit: the seed was drawn where the caller's RNG is put back afterwards, so every fit with
    random_state None drew the same seed (restarts were one fit). As scikit-learn's estimators, each fit draws from
    numpy's global RNG, which np.random.seed makes repeatable."""
    import lightning.pytorch as pl

    seeds, seed_everything = [], pl.seed_everything
    monkeypatch.setattr(pl, "seed_everything", lambda seed, **kw: seeds.append(seed) or seed_everything(seed, **kw))
    X, _ = blobs()
    est = tiny(random_state=None)
    est.fit(X), est.fit(X)
    for _ in range(2):
        np.random.seed(7)
        tiny(random_state=None).fit(X)
    assert seeds[0] != seeds[1] and seeds[2] == seeds[3], seeds
    tiny(random_state=np.int64(3)).fit(X)  # an integer is the run's seed itself, as the CLI's seed_everything
    assert seeds[4] == 3


def test_inference_runs_on_the_accelerator_the_fit_ran_on(monkeypatch):
    """Found by an audit (by reading): trainer_args' accelerator overrides the argument for the fit, but labels_,
    predict and transform embedded on the argument's, e.g. on a GPU after a fit on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert tiny(accelerator="auto", trainer_args={"accelerator": "cpu"})._device() == torch.device("cpu")
    assert tiny(accelerator="cpu", trainer_args={"accelerator": "gpu"})._device() == torch.device("cuda")
    assert tiny(accelerator="auto")._device() == torch.device("cuda")


def test_pipeline_after_standard_scaler_on_digits():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), DeepClusterer(
        "DEC", n_clusters=10, max_epochs=10, batch_size=256, random_state=0,
        method_args=dict(hidden_dims=[128, 256], latent_dim=10, pretrain_epochs=6, update_interval=5)))
    labels = pipe.fit_predict(X)
    assert adjusted_rand_score(y, labels) > 0.3, adjusted_rand_score(y, labels)
    np.testing.assert_array_equal(pipe.predict(X), labels)
    assert pipe[-1].transform(pipe[0].transform(X)).shape == (1797, 10)


def test_method_by_name_any_case_or_by_class_and_pickles(tmp_path):
    from dcl.methods.ae_kmeans import AEKMeans

    X, _ = blobs()
    args = dict(hidden_dims=[16], latent_dim=2, kmeans_n_init=2)
    by_name = DeepClusterer("aekmeans", n_clusters=3, max_epochs=2, random_state=0, method_args=args).fit(X)
    by_class = DeepClusterer(AEKMeans, n_clusters=3, max_epochs=2, random_state=0, method_args=args).fit(X)
    np.testing.assert_array_equal(by_name.labels_, by_class.labels_)
    assert type(by_name.model_) is AEKMeans and by_name.model_._trainer is None
    clone = pickle.loads(pickle.dumps(by_name))
    np.testing.assert_array_equal(clone.predict(X), by_name.labels_)


def test_clear_errors():
    X, _ = blobs(n=10)
    with pytest.raises(LookupError, match="unknown method 'nope'.*DEC"):
        DeepClusterer("nope", n_clusters=2).fit(X)
    with pytest.raises(TypeError, match="ClusteringMethod subclass"):
        DeepClusterer(dict, n_clusters=2).fit(X)
    with pytest.raises(ValueError, match="n_samples=10 should be >= n_clusters=12"):
        tiny(n_clusters=12).fit(X)
    # constant samples end in one cluster: said, as dcl fit says it (was silent)
    with pytest.warns(UserWarning, match="every sample ended in one cluster of the 3"):
        assert set(tiny().fit(np.ones((30, 4))).labels_) == {0}
    # ... but a method that finds K does not use n_clusters (its k_init and max_components bound K)
    dp = DeepClusterer("dpgmm", n_clusters=12, max_epochs=2, random_state=0,
                       method_args=dict(hidden_dims=[8], latent_dim=2, pretrain_epochs=1)).fit(X)
    assert 1 <= dp.n_clusters_ <= 50 and dp.model_.hparams.n_clusters == 12  # the hint is kept, not used
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 2"):
        tiny(n_clusters=1).fit(X)
    with pytest.raises(ValueError, match="update_interval"):
        tiny(method_args={**TINY, "update_interval": 0}).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        tiny().fit(np.where(np.eye(10, 4) > 0, np.nan, X))
    # finite in float64, inf in the networks' float32 (was: "samples contain NaN or inf", which X does not)
    for large in (X * 1e300, -np.abs(X) * 1e300):  # (the second: every value below float32's lowest)
        with pytest.raises(ValueError, match=r"values up to [0-9.]+e\+300, beyond float32's range.*scale the data"):
            tiny().fit(large)
    # weights in bf16 beside a float32 clustering state: refused at the start of the run, not mid-fit
    with pytest.raises(ValueError, match="precision 'bf16-true' is not supported.*bf16-mixed"):
        tiny(trainer_args={"precision": "bf16-true"}).fit(X)
    # a Trainer setting Lightning cannot apply to a method that steps its own optimizers, with what to set instead
    images = np.random.RandomState(0).rand(24, 1, 8, 8).astype(np.float32)
    with pytest.raises(ValueError, match="gradient_clip_val 1.0 cannot apply; set the method's own gradient_clip_val"):
        DeepClusterer("dcfae", n_clusters=2, trainer_args={"gradient_clip_val": 1.0}).fit(images)
    # method_args holds the method's own settings, named as its config's model.init_args
    with pytest.raises(ValueError, match="DEC has no setting 'latnt_dim' .did you mean 'latent_dim'.*update_interval"):
        tiny(method_args={**TINY, "latnt_dim": 3}).fit(X)
    with pytest.raises(ValueError, match=r"n_clusters=4: pass it as DeepClusterer\(n_clusters=...\)"):
        tiny(method_args={**TINY, "n_clusters": 4}).fit(X)
    with pytest.raises(ValueError, match="input_shape: it is taken from X"):
        tiny(method_args={**TINY, "input_shape": (4,)}).fit(X)
    with pytest.raises(ValueError, match="max_epochs=0 trains nothing"):
        tiny(max_epochs=0).fit(X)
    for setting in ("max_epochs", "max_steps"):  # given to the Trainer (an audit: not refused, one cluster)
        with pytest.raises(ValueError, match=f"trainer_args {setting}=0 trains nothing"):
            tiny(trainer_args={setting: 0}).fit(X)
    # DDP would rerun the user's script in new processes: refused, pointing at the dcl command
    with pytest.raises(ValueError, match="trains in this one process, but the trainer asks for 2.*--trainer.devices N"):
        tiny(accelerator="cpu", devices=2).fit(X)
    ae = dict(hidden_dims=[16], latent_dim=2, kmeans_n_init=2)
    assert tiny(method="ae_kmeans", method_args=ae).fit(X).labels_.shape == (10,)  # the configs' folder name works


def test_images_are_accepted():
    x = np.random.RandomState(0).rand(24, 1, 8, 8).astype(np.float32)
    est = DeepClusterer("dec", n_clusters=2, max_epochs=2, random_state=0,
                        method_args=dict(TINY, hidden_dims=[8])).fit(x)
    assert est.model_.input_shape == (1, 8, 8) and est.transform(x).shape == (24, 2)
    with pytest.raises(ValueError, match="shape"):
        est.predict(x.reshape(24, 1, 4, 16))
    # DCFAE's embedding is its dense network's output, not its latent: the feature names follow transform's columns
    dcfae = DeepClusterer("dcfae", n_clusters=2, max_epochs=2, batch_size=8, random_state=0,
                          method_args=dict(DCFAE_TINY, fae_epochs=1)).fit(x)
    assert dcfae.transform(x).shape == (24, 3) and len(dcfae.get_feature_names_out()) == 3
    # (found by probing: flat samples were "64 features, but DeepClusterer is expecting 1", its channels)
    with pytest.raises(ValueError, match=r"samples of shape \(64,\), but DeepClusterer was fitted on samples of "
                                         r"shape \(1, 8, 8\)"):
        est.predict(x.reshape(24, 64))


def test_in_memory_datamodule_scores_with_labels():
    import lightning.pytorch as pl
    from dcl.metrics import clustering_scores
    from dcl.methods.ae_kmeans import AEKMeans

    X, y = blobs()
    dm = InMemory(X, y, batch_size=16)
    assert dm.n_clusters == 3 and dm.input_shape == (4,) and dm.x.dtype == torch.float32
    pl.seed_everything(0)  # unseeded, the weights followed the tests before (ACC 0.75 after another order of them)
    model = AEKMeans(dm.n_clusters, dm.input_shape, latent_dim=2, hidden_dims=[16], kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    scores = trainer.validate(model, datamodule=dm, verbose=False)[0]
    # the logged scores are those of the model's clusters against the labels the datamodule was given
    model.eval()
    with torch.no_grad():
        expected = clustering_scores(model.predict_clusters(model.embed(dm.x)), dm.y)
    assert scores["val/k"] == 3 and expected["acc"] > 0.9, expected  # well-separated blobs
    for key in ("acc", "nmi", "ari"):
        assert scores[f"val/{key}"] == pytest.approx(expected[key], abs=1e-6), key


def test_own_trainer_data_that_cannot_work_is_refused_before_training_and_given_loaders_are_scored():
    """Found by probing from Python: a plain DataLoader trained through the pretraining, then failed on
    ``None.all_dataloader``; a model built for another input_shape failed in a matmul; and validate given a
    DataLoader after a fit scored the fit's datamodule instead (Lightning keeps ``trainer.datamodule``)."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from dcl.method import ConfigError
    from dcl.metrics import clustering_scores
    from dcl.methods.ae_kmeans import AEKMeans

    X, y = blobs()
    dm = InMemory(X, y, batch_size=16)

    def trainer() -> pl.Trainer:
        return pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False)

    model = AEKMeans(3, (4,), latent_dim=2, hidden_dims=[16], kmeans_n_init=2)
    plain = DataLoader(TensorDataset(torch.tensor(X, dtype=torch.float32)), batch_size=16)
    with pytest.raises(ConfigError, match=r"trains from a ClusteringDataModule.*InMemory"):
        trainer().fit(model, plain)
    with pytest.raises(ConfigError, match=r"built for samples of shape \(5,\).*input_shape=\[4\]"):
        trainer().fit(AEKMeans(3, (5,), latent_dim=2, hidden_dims=[16]), datamodule=dm)
    fitted = trainer()
    fitted.fit(model, datamodule=dm)
    some = DataLoader([{"x": dm.x[i], "y": i % 2} for i in range(20)], batch_size=10)  # other labels than dm's
    scores = fitted.validate(model, some, verbose=False)[0]
    expected = clustering_scores(model.predict_clusters(model.embed(dm.x[:20])), torch.arange(20) % 2)
    assert scores["val/acc"] == pytest.approx(expected["acc"])
    with pytest.raises(ConfigError, match="batches of dicts"):
        fitted.validate(model, plain, verbose=False)


def test_training_that_diverges_is_one_clear_error(tmp_path):
    """Found by probing from Python: on data of 1e20 a fit went on with NaN weights until k-means refused its
    input, blaming the data ("x contains non-finite values")."""
    import lightning.pytorch as pl

    from dcl.method import TrainingDiverged
    from dcl.methods.dec import DEC

    X, y = blobs()
    model = DEC(3, (4,), latent_dim=2, hidden_dims=[16], pretrain_epochs=1, kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with pytest.raises(TrainingDiverged, match="training diverged: the embeddings of 60 of 60 samples are not "
                                               "finite .* standardize the data or lower the learning rate"):
        trainer.fit(model, datamodule=InMemory(X * 1e20, y, batch_size=16))


def test_in_memory_labels_may_be_names_and_are_never_truncated():
    """Found by probing from Python: string labels raised a torch TypeError, float ones were cut to integers."""
    from dcl.datamodule import DataError

    X, y = blobs()
    names = np.array(["a", "b", "c"])[y]
    dm = InMemory(X, names)
    assert torch.equal(dm.y, torch.as_tensor(y)) and dm.class_names == ["a", "b", "c"]
    assert torch.equal(InMemory(X, y.astype(float)).y, torch.as_tensor(y))
    with pytest.raises(DataError, match="InMemory: the labels y are not integers"):
        InMemory(X, y + 0.7).y


def test_import_dcl_is_light():
    import subprocess
    import sys

    code = "import sys, dcl; assert 'lightning' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)  # the estimator is exported lazily
    assert dcl.DeepClusterer is DeepClusterer


# -- a refit that fails, settings checked up front, the caller's state left alone ------------------------------
def test_a_refused_refit_keeps_the_previous_fit():
    X, _ = blobs()
    est = tiny().fit(X)
    model, labels = est.model_, est.labels_
    est.set_params(method_args={**TINY, "pretrain_epoch": 2})  # a typo: refused, after X[:, :3] was validated
    with pytest.raises(ValueError, match="no setting 'pretrain_epoch'"):
        est.fit(X[:, :3])
    assert est.n_features_in_ == 4 and est.input_shape_ == (4,) and est.model_ is model
    np.testing.assert_array_equal(est.predict(X), labels)
    with pytest.raises(ValueError, match="4 features"):
        est.predict(X[:, :3])
    # a refused batch size too (found by a user: predict then failed in torch.cat, batching by the new setting)
    est.set_params(method_args=TINY, batch_size=-3)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got -3"):
        est.fit(X)
    np.testing.assert_array_equal(est.predict(X), labels)
    assert est.transform(X).shape == (len(X), est.model_.embedding_dim)
    # a first fit refused leaves nothing that looks fitted
    from sklearn.exceptions import NotFittedError

    est = tiny(batch_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        est.fit(X)
    with pytest.raises(NotFittedError):
        est.predict(X)


def test_training_that_diverges_is_an_error_not_a_fit():
    X, _ = load_digits(return_X_y=True)
    X = X * 1e20  # within float32, but the reconstruction loss overflows: the weights go NaN
    diverged = r"training diverged.*not finite.*standardize the data.*lower the learning rate"
    # DEC: a NaN met mid-fit (its k-means init) fails that step; said as what it is
    with pytest.raises(ValueError, match=diverged):
        DeepClusterer("dec", n_clusters=10, max_epochs=4, random_state=0,
                      method_args={"hidden_dims": [32], "pretrain_epochs": 2}).fit(X)
    # AE-CM runs to its end on NaN weights (was: a fit with NaN centers and embedding)
    with pytest.raises(ValueError, match=diverged):
        DeepClusterer("aecm", n_clusters=10, max_epochs=2, random_state=0, method_args={"hidden_dims": [32]}).fit(X)

    from dcl.methods.ae_kmeans import AEKMeans

    class FailsOnNaN(AEKMeans):  # a method of your own whose step fails on NaN weights with an error of its own
        def on_train_epoch_end(self):
            next(self.parameters()).data.fill_(float("nan"))
            raise RuntimeError("linalg.eigh: the algorithm failed to converge")

    with pytest.raises(ValueError, match=diverged) as info:
        DeepClusterer(FailsOnNaN, n_clusters=3, max_epochs=1, method_args={"hidden_dims": [8]}).fit(X[:60] / 1e20)
    assert "linalg.eigh" in str(info.value.__cause__)


def test_integer_settings_are_checked_up_front():
    X, _ = blobs(n=20)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 1.5"):
        tiny(batch_size=1.5).fit(X)
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 2, got 3.0"):
        tiny(n_clusters=3.0).fit(X)
    with pytest.raises(ValueError, match="max_epochs must be an integer or None, got 2.5"):
        tiny(max_epochs=2.5).fit(X)
    assert tiny(batch_size=np.int64(8), n_clusters=np.int64(2)).fit(X).n_clusters_ == 2
    for setting, message in [("batch_size", "batch_size must be an integer >= 1, got True"),  # (bool is an int)
                             ("n_clusters", "n_clusters must be an integer >= 2, got True"),
                             ("max_epochs", "max_epochs must be an integer or None, got True")]:
        with pytest.raises(ValueError, match=message):
            tiny(**{setting: True}).fit(X)


def test_a_method_that_finds_k_takes_any_n_clusters():
    X, _ = blobs(n=20)
    args = dict(hidden_dims=[8], latent_dim=2, pretrain_epochs=1)
    for n_clusters in (1, None):
        dp = DeepClusterer("dpgmm", n_clusters=n_clusters, max_epochs=2, random_state=0, method_args=args).fit(X)
        assert 1 <= dp.n_clusters_ <= 50


def test_a_model_checkpoint_callback_turns_checkpointing_on(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    X, _ = blobs(n=20)
    tiny(trainer_args={"callbacks": [ModelCheckpoint(dirpath=tmp_path, save_last=True)]}).fit(X)
    assert (tmp_path / "last.ckpt").is_file()
    with pytest.raises(Exception, match="enable_checkpointing=False"):  # the user's explicit setting stands
        tiny(trainer_args={"callbacks": ModelCheckpoint(dirpath=tmp_path), "enable_checkpointing": False}).fit(X)


def test_the_callers_global_rngs_are_left_alone():
    import os
    import random

    X, _ = blobs(n=20)

    def seed(value):
        random.seed(value), np.random.seed(value), torch.manual_seed(value)

    def draws():
        return random.random(), np.random.rand(), float(torch.rand(1))

    seed(123)
    expected = draws()
    seed(123)
    os.environ.pop("PL_GLOBAL_SEED", None)
    est = tiny(random_state=7).fit(X)
    est.predict(X)
    assert draws() == expected and "PL_GLOBAL_SEED" not in os.environ
    np.testing.assert_array_equal(tiny(random_state=7).fit(X).labels_, est.labels_)  # still repeatable


def test_verbose_false_silences_the_methods_own_lines(capsys):
    import io
    import logging

    X, _ = blobs()
    stops_early = dict(TINY, tol=0.99)  # DEC stops at its second update, saying so
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)  # on Lightning's logger: it may not propagate to pytest's
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level  # (another test module may have raised it)
    lightning_log.addHandler(handler)
    lightning_log.setLevel(logging.INFO)
    try:
        tiny(method_args=stops_early, verbose=True).fit(X)
        assert "stopping" in logged.getvalue()
        logged.truncate(0)
        tiny(method_args=stops_early).fit(X)
        assert "stopping" not in logged.getvalue() + capsys.readouterr().out
    finally:
        lightning_log.removeHandler(handler)
        lightning_log.setLevel(level)
