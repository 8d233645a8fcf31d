"""ClusteringPlots: PNGs written next to the run (and to image-logging loggers), with and without labels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import make_blobs

from conftest import ImageLogger
from dcl.callbacks import ClusteringPlots
from dcl.callbacks.plots import project_2d
from dcl.estimator import InMemory
from dcl.files import run_dir
from dcl.methods.ae_kmeans import AEKMeans

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_px: int = 200) -> None:
    import matplotlib.image

    assert path.is_file() and path.read_bytes()[:8] == PNG, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_px
    assert img[..., :3].std() > 0.05  # not a blank canvas


def fit(tmp_path, labels: bool, logger=False, **plot_args):
    X, y = make_blobs(n_samples=120, centers=3, n_features=5, random_state=0)
    dm = InMemory(X, y if labels else None, batch_size=32, n_clusters=3)
    model = AEKMeans(3, dm.input_shape, latent_dim=3, hidden_dims=[16], kmeans_n_init=2)
    cb = ClusteringPlots(**plot_args)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb])
    trainer.fit(model, datamodule=dm)
    return cb


def test_with_labels_writes_three_pngs_next_to_the_run_and_logs_them(tmp_path):
    logger = ImageLogger(tmp_path / "logs")
    cb = fit(tmp_path, labels=True, logger=logger)
    folder = tmp_path / "logs" / "proj" / "run1" / "plots"  # where ModelCheckpoint puts checkpoints/
    assert set(cb.paths) == {"embedding", "confusion", "cluster_sizes"}
    for name in ClusteringPlots.FILES:
        assert_png(folder / name)
    assert set(logger.images) == {"plots/embedding", "plots/confusion", "plots/cluster_sizes"}
    assert logger.images["plots/confusion"] == [str(folder / "confusion.png")]


def test_without_labels_no_confusion_matrix(tmp_path):
    cb = fit(tmp_path, labels=False, dirpath=str(tmp_path / "figs"))
    assert set(cb.paths) == {"embedding", "cluster_sizes"}
    assert_png(tmp_path / "figs" / "embedding.png")
    assert_png(tmp_path / "figs" / "cluster_sizes.png")
    assert not (tmp_path / "figs" / "confusion.png").exists()


def test_without_logger_into_default_root_dir(tmp_path):
    fit(tmp_path, labels=True, projection="tsne", tsne_points=60)
    for name in ClusteringPlots.FILES:
        assert_png(tmp_path / "plots" / name)


def test_run_dir_matches_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path, name="exp")
    trainer = pl.Trainer(logger=logger, default_root_dir=tmp_path)
    assert run_dir(trainer) == Path(logger.log_dir)


def test_draw_many_clusters_and_partial_labels(tmp_path):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g)
    pred = torch.randint(0, 30, (500,), generator=g)
    y = torch.randint(-1, 12, (500,), generator=g)  # -1: unknown
    paths = ClusteringPlots().draw(z, pred, y, tmp_path, title="many")
    for p in paths.values():
        assert_png(p)


def test_a_draw_stopped_while_writing_keeps_the_last_plots(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    g = torch.Generator().manual_seed(0)
    z, pred, y = torch.randn(60, 3, generator=g), torch.randint(0, 3, (60,), generator=g), torch.arange(60) % 3
    paths = ClusteringPlots().draw(z, pred, y, tmp_path, title="first")
    before = {name: p.read_bytes() for name, p in paths.items()}

    def savefig_then_fail(self, fname, **kwargs):  # half a file written, then the disk is full
        Path(fname).write_bytes(PNG)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", savefig_then_fail)
    with pytest.raises(OSError, match="No space"):
        ClusteringPlots().draw(z, pred, y, tmp_path, title="second")
    assert {name: p.read_bytes() for name, p in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no temp files


def test_classes_are_named_when_the_data_names_them(tmp_path):
    g = torch.Generator().manual_seed(0)
    z, pred, y = torch.randn(60, 3, generator=g), torch.randint(0, 3, (60,), generator=g), torch.arange(60) % 3
    names = ["setosa", "versicolor", "virginica"]
    plots = ClusteringPlots()
    fig = plots._confusion(pred, y, "t", tmp_path / "c.png", names.__getitem__)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    fig = plots._embedding(z, pred, y, y >= 0, "t", tmp_path / "e.png", names.__getitem__)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == names
    paths = plots.draw(z, pred, y, tmp_path, class_names=names)
    assert set(paths) == {"embedding", "confusion", "cluster_sizes"}
    # labels given as the names themselves (a list of str): the same figures, the classes named by them
    drawn = []
    plots._confusion = lambda p, t, title, path, name: drawn.append((t.tolist(), [name(i) for i in range(3)]))
    plots.draw(z, pred, [names[i] for i in y], tmp_path)
    assert drawn == [(y.tolist(), names)]


def test_pca_projection_is_sklearns_up_to_sign_and_deterministic():
    from sklearn.decomposition import PCA

    z = torch.from_numpy(np.random.RandomState(0).normal(size=(200, 5)) * [5, 3, 1, 0.5, 0.1]).float()
    ours = project_2d(z).numpy()
    ref = PCA(2).fit_transform(z.numpy())
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(ours, project_2d(z).numpy())
    one = project_2d(z[:, :1])  # one dimension: itself, beside zeros
    assert torch.equal(one[:, 0], z[:, 0]) and not one[:, 1].any()
    assert project_2d(z[:20], "tsne").shape == (20, 2)  # a perplexity below the 20 samples (scikit-learn's 30 fails)
    np.testing.assert_array_equal(project_2d(z[:, :2]).numpy(), z[:, :2].numpy())
    with pytest.raises(ValueError, match="pca.*tsne"):
        ClusteringPlots(projection="umap")
    with pytest.raises(ValueError, match="unknown projection 'umap'; choose 'pca' or 'tsne'"):
        project_2d(z, "umap")
    for points in ({"max_points": 9}, {"tsne_points": 9}):
        with pytest.raises(ValueError, match="max_points and tsne_points must be >= 10"):
            ClusteringPlots(**points)


def test_from_the_cli(tmp_path):
    from conftest import run_cli

    scores = run_cli(["fit", "--model", "AEKMeans", "--data", "Digits", "--model.init_args.hidden_dims", "[32]",
                      "--model.init_args.kmeans_n_init", "2", "--trainer.max_epochs", "1",
                      "--trainer.enable_checkpointing", "false",
                      "--trainer.callbacks+=dcl.callbacks.ClusteringPlots"], tmp_path)
    assert scores["k"] == 10
    for name in ClusteringPlots.FILES:
        assert_png(tmp_path / "plots" / name)


def drawn(z, pred, y, folder, plots: ClusteringPlots | None = None, **kw):
    """The figures ``draw`` (of ``plots``, default settings without) makes, by file name."""
    plots, figs = plots or ClusteringPlots(), {}
    plots._save = lambda fig, path: figs.__setitem__(Path(path).name, fig)
    plots.draw(z, pred, y, folder, **kw)
    return figs


def scatter_colors(ax) -> list[tuple]:
    return [tuple(np.round(c.get_facecolor()[0], 4)) for c in ax.collections]


def bar_colors(ax) -> dict[str, tuple]:
    """The cluster sizes' bars' colors, by cluster."""
    return {t.get_text(): tuple(np.round(b.get_facecolor(), 4)) for t, b in zip(ax.get_xticklabels(), ax.patches)}


def test_colors_follow_the_rank_of_each_label_and_negatives_are_grey(tmp_path):
    import matplotlib.colors

    z, pred = torch.randn(90, 3, generator=torch.Generator().manual_seed(0)), torch.arange(90) % 3
    y = pred.clone()
    plain = drawn(z, pred, y, tmp_path)
    shifted = drawn(z, pred + 100, y + 100, tmp_path)  # labels outside 0..K-1: as distinct as 0..K-1
    for panel in (0, 1):
        colors = scatter_colors(shifted["embedding.png"].axes[panel])
        assert colors == scatter_colors(plain["embedding.png"].axes[panel]) and len(set(colors)) == 3
    # cluster -1 (noise): grey, not the last cluster's color, in the embedding and in the sizes' bars
    noisy = torch.where(torch.arange(90) % 10 == 0, -1, pred)
    figs = drawn(z, noisy, y, tmp_path)
    grey = tuple(np.round(matplotlib.colors.to_rgba("lightgrey"), 4))
    assert scatter_colors(figs["embedding.png"].axes[0])[0] == grey
    bars = bar_colors(figs["cluster_sizes.png"].axes[0])
    assert bars["-1"] == grey and len(set(bars.values())) == 4


def test_class_names_for_labels_that_start_at_1(tmp_path):
    g = torch.Generator().manual_seed(0)
    z, pred, y = torch.randn(60, 3, generator=g), torch.randint(0, 3, (60,), generator=g), torch.arange(60) % 3 + 1
    names = ["setosa", "versicolor", "virginica"]
    figs = drawn(z, pred, y, tmp_path, class_names=names)  # was an IndexError
    assert [t.get_text() for t in figs["confusion.png"].axes[0].get_xticklabels()] == names
    assert [t.get_text() for t in figs["embedding.png"].axes[1].get_legend().get_texts()] == names
    with pytest.raises(ValueError, match="2 class_names for labels 1..3 .3 values."):
        drawn(z, pred, y, tmp_path, class_names=names[:2])


def test_draw_takes_numpy_arrays(tmp_path):
    rng = np.random.RandomState(0)
    paths = ClusteringPlots().draw(rng.normal(size=(60, 3)), np.arange(60) % 3, np.full(60, -1), tmp_path)
    assert set(paths) == {"embedding", "cluster_sizes"}
    for p in paths.values():
        assert_png(p)


def test_confusion_rows_in_matched_order_sizes_largest_first_and_the_mean_class_size(tmp_path):
    """The figures' content, read back from matplotlib: the matched pairs on the confusion matrix's diagonal, the
    bars largest first, the reference line at the mean size of the labeled classes."""
    pred = torch.tensor([0] * 10 + [1] * 30 + [2] * 20)
    y = torch.tensor([1] * 10 + [2] * 30 + [0] * 20)  # clusters 0, 1, 2 are classes 1, 2, 0
    figs = drawn(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)), pred, y, tmp_path)
    confusion = figs["confusion.png"].axes[0]
    assert np.array_equal(np.asarray(confusion.images[0].get_array()), np.diag([20, 10, 30]))
    assert [t.get_text() for t in confusion.get_yticklabels()] == ["2", "0", "1"]
    sizes = figs["cluster_sizes.png"].axes[0]
    assert [b.get_height() for b in sizes.patches] == [30, 20, 10]
    assert [t.get_text() for t in sizes.get_xticklabels()] == ["1", "2", "0"]
    assert sizes.lines[0].get_ydata()[0] == 20  # 60 labeled samples of 3 classes
    y[:30] = -1  # half unlabeled: 30 labeled samples of 2 classes (N / K would be 20)
    figs = drawn(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)), pred, y, tmp_path)
    assert figs["cluster_sizes.png"].axes[0].lines[0].get_ydata()[0] == 15


def test_a_subsample_keeps_the_colors_of_all_samples_and_follows_the_seed(tmp_path):
    pred = torch.tensor([0] + [1] * 150 + [2] * 49)  # cluster 0: one sample, missed by a subsample of 20
    figs = drawn(torch.randn(200, 3, generator=torch.Generator().manual_seed(0)), pred, torch.full((200,), -1),
                 tmp_path, plots=ClusteringPlots(max_points=20))
    embedding, bars = figs["embedding.png"].axes[0], bar_colors(figs["cluster_sizes.png"].axes[0])
    shown = [t.get_text() for t in embedding.get_legend().get_texts()]
    assert shown == ["1", "2"]  # (cluster 0 is not in the subsample)
    assert {k: c[:3] for k, c in zip(shown, scatter_colors(embedding))} == {k: bars[k][:3] for k in shown}  # (RGB)
    assert torch.equal(ClusteringPlots(seed=1)._subsample(100, 10), ClusteringPlots(seed=1)._subsample(100, 10))
    assert not torch.equal(ClusteringPlots(seed=1)._subsample(100, 10), ClusteringPlots(seed=0)._subsample(100, 10))


def test_where_the_plots_go_and_when_nothing_is_drawn_or_logged(tmp_path):
    from dcl.callbacks.plots import plots_folder

    logger = ImageLogger(tmp_path / "logs")
    cb = fit(tmp_path, labels=True, logger=logger, log_images=False)  # drawn, not logged
    assert cb.paths and not logger.images
    trainer = SimpleNamespace(callbacks=[ClusteringPlots(dirpath=str(tmp_path / "mine"))], loggers=[])
    assert plots_folder(trainer) == tmp_path / "mine"
    assert plots_folder(SimpleNamespace(callbacks=[], loggers=[])) is None  # no run folder: nothing written
    # a trial run (fast_dev_run) writes nothing, as Lightning's loggers and checkpoints
    X, y = make_blobs(n_samples=60, centers=3, n_features=5, random_state=0)
    trial = ClusteringPlots(dirpath=str(tmp_path / "trial"))
    pl.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[trial]).fit(AEKMeans(3, (5,), hidden_dims=[8], kmeans_n_init=1),
                                      datamodule=InMemory(X, y, batch_size=32, n_clusters=3))
    assert not trial.paths and not (tmp_path / "trial").exists()
