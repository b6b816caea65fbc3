"""What optuna-dashboard shows for an optuna-rnn study, and launching it.

While a study runs, :class:`StudyDashboard` (a study callback that
:func:`optuna_rnn.study.run_trials` installs) keeps three things on the study,
all through optuna-dashboard's public API:

* a markdown **note**: dataset and split sizes, search space, sampler, pruner,
  progress, and the best trial with its test metric;
* a plotly graph ``learning-curves``: train and validation loss and the
  validation metric per epoch of the top trials;
* a plotly graph ``epochs-by-state``: epochs spent on complete, pruned and
  failed trials.

Updates are throttled so that they cost a small share of the study's time
however many trials it has. :func:`serve` starts optuna-dashboard on a storage
with the study's artifact store attached, so trained weights download from
the trial pages.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import plotly.graph_objects as go
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard import save_note, save_plotly_graph_object
from plotly.subplots import make_subplots

from optuna_rnn.artifacts import ranked_complete
from optuna_rnn.config import CONFIG_ATTR
from optuna_rnn.errors import MissingModelError, UsageError
from optuna_rnn.recovery import checkpoints_dir, tidy_checkpoints
from optuna_rnn.study import BEST_TEST_ATTR, DATA_ATTR, StudySession, artifacts_folder
from optuna_rnn.workers import state_counts

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication

CURVES_GRAPH = "learning-curves"
EPOCHS_GRAPH = "epochs-by-state"
TOP_CURVES = 5
# Colours of plotly's default palette, so the figures match the dashboard's own plots.
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
STATE_COLOURS = {TrialState.COMPLETE: "#00cc96", TrialState.PRUNED: "#ffa15a", TrialState.FAIL: "#ef553b"}


# --- content --------------------------------------------------------------------------


def recorded(study: optuna.Study) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The study's recorded configuration, data summary and best-trial test record."""
    attrs = study.user_attrs
    raw = attrs.get(CONFIG_ATTR, {})
    config = json.loads(raw) if isinstance(raw, str) else dict(raw)
    data = attrs.get(DATA_ATTR) or {}
    test = attrs.get(BEST_TEST_ATTR)
    return config, data, test if isinstance(test, dict) else None


def study_note(study: optuna.Study, *, best_test: dict[str, Any] | None = None) -> str:
    """The study's markdown note: what it tunes on, how, how far it got and its best trial.

    ``best_test`` is the best trial's test record (``StudySession.best_test``);
    without it the one recorded on the study is used when it is for the
    current best trial.
    """
    config, data, recorded_test = recorded(study)
    trials = study.get_trials(deepcopy=False)
    count = state_counts(trials)
    epochs = {s: sum(_epochs(t) for t in trials if t.state == s) for s in TrialState}
    metric = (study.metric_names or ["value"])[0]
    updated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {study.study_name}",
        "",
        f"*optuna-rnn study, {study.direction.name.lower()} validation {metric}. "
        f"Written by optuna-rnn as the study runs (last update {updated}); edits here are overwritten.*",
        "",
        "### Best trial",
        "",
        *_best_lines(study, metric, best_test or recorded_test, baseline_text(data.get("baseline"))),
        "",
        "### Progress",
        "",
        "| complete | pruned | failed | running | epochs on complete / pruned trials |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {count[TrialState.COMPLETE]} | {count[TrialState.PRUNED]} | {count[TrialState.FAIL]} "
        f"| {count[TrialState.RUNNING]} | {epochs[TrialState.COMPLETE]} / {epochs[TrialState.PRUNED]} |",
        *config_sections(config, data),
    ]
    return "\n".join(lines) + "\n"


def config_sections(config: dict[str, Any], data: dict[str, Any], *, level: int = 3) -> list[str]:
    """Markdown sections (headings of ``level``) on the data, search space and settings a study recorded.

    Nothing for a study that recorded none (not made by optuna-rnn).
    """
    if not config:
        return []
    h = "#" * level
    return [
        "",
        f"{h} Data",
        "",
        *_data_lines(config, data),
        "",
        f"{h} Search space",
        "",
        "| parameter | searched over |",
        "| --- | --- |",
        *(
            f"| `{name}` | {_describe(spec)} |"
            for name, spec in config.get("space", {}).items()
            if name not in ("window", "forecast") or data.get("task") == "forecasting"  # forecasting only
        ),
        "",
        f"{h} Settings",
        "",
        *_settings_lines(config),
    ]


def baseline_text(baseline: Any) -> str | None:
    """A sentence on the naive baseline a study recorded for its data (``{"name", "valid", "test"}``);
    ``None`` if it recorded none."""
    if not isinstance(baseline, dict):
        return None
    scores = [
        f"{split} {baseline[key]:.4g}"
        for split, key in (("validation", "valid"), ("test", "test"))
        if isinstance(baseline.get(key), int | float)
    ]
    return f"Naive baseline, {baseline.get('name', '?')}: {', '.join(scores) or 'no score'}."


def _best_lines(
    study: optuna.Study, metric: str, test: dict[str, Any] | None, baseline: str | None = None
) -> list[str]:
    ranked = ranked_complete(study)
    if not ranked:
        return ["No trial has completed yet."]
    best = ranked[0]
    text = f"**Trial #{best.number}**: validation {metric} **{best.value:.4g}**"
    if test is not None and test.get("trial") == best.number:
        text += f", test {test.get('metric', metric)} **{test['test_value']:.4g}**"
    attrs = best.user_attrs
    facts = [
        f"{attrs[k]} {label}" for k, label in (("n_params", "weights"), ("epochs", "epochs")) if k in attrs
    ]
    if "seconds" in attrs:
        facts.append(f"{attrs['seconds']:.1f} s of training")
    lines = [
        text + (f"; {', '.join(facts)}." if facts else "."),
        "The test split is never used to select trials." + (f" {baseline}" if baseline else ""),
        "",
        "| parameter | value |",
        "| --- | --- |",
    ]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in best.params.items()]
    return lines


def _data_lines(config: dict[str, Any], data: dict[str, Any]) -> list[str]:
    spec = config.get("dataset", {})
    source = "built-in dataset" if spec.get("name") else f"file `{spec.get('path')}`"
    task = data.get("task", "?")
    lines = [f"**{data.get('name', spec.get('name'))}** ({task}), {source}."]
    if data.get("description"):
        lines += ["", str(data["description"])]
    splits = data.get("splits") or {}
    unit = "rows" if task == "forecasting" else "sequences"
    if splits:
        lines += [
            "",
            f"| split | {unit} |",
            "| --- | ---: |",
            *(f"| {name} | {size} |" for name, size in splits.items()),
        ]
    shape = [f"input size {data['input_size']}"] if "input_size" in data else []
    if task == "forecasting":
        shape += [f"target `{data.get('target')}`", f"horizon {data.get('horizon', 1)}"]
    elif data.get("classes"):
        shape += [f"{len(data['classes'])} classes", f"length {data.get('max_length')}"]
    if shape:
        lines += ["", ", ".join(shape) + "."]
    return lines


def _settings_lines(config: dict[str, Any]) -> list[str]:
    seed = config.get("seed")
    keep = config.get("keep_top")
    return [
        f"- sampler: **{config.get('sampler', '?')}**" + (f" (seed {seed})" if seed is not None else ""),
        f"- pruner: **{config.get('pruner', '?')}**",
        f"- epochs per trial: at most {config.get('max_epochs', '?')}, "
        f"early-stopping patience {config.get('patience') or 'off'}",
        f"- trained weights: `{config.get('artifacts') or 'optuna-rnn-artifacts/'}`"
        + ("" if config.get("artifacts") else " beside the database")
        + (f", best {keep} trials kept" if keep else ", every complete trial kept"),
    ]


def _describe(spec: Any) -> str:
    if isinstance(spec, dict):
        text = f"{_fmt(spec['low'])} – {_fmt(spec['high'])}"
        if spec.get("log"):
            text += ", log"
        if spec.get("step"):
            text += f", step {spec['step']}"
        return text
    if isinstance(spec, list):
        return ", ".join(_fmt(v) for v in spec)
    return f"fixed: {_fmt(spec)}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _epochs(trial: FrozenTrial) -> int:
    epochs = trial.user_attrs.get("epochs")
    if isinstance(epochs, int):
        return epochs
    return len(trial.intermediate_values)


def learning_curves_figure(study: optuna.Study, *, top: int = TOP_CURVES) -> go.Figure:
    """Train and validation loss, and the validation metric, per epoch of the ``top`` best trials."""
    metric = (study.metric_names or ["value"])[0]
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("loss (solid: validation, dotted: train)", f"validation {metric}"),
        horizontal_spacing=0.1,
    )
    for rank, trial in enumerate(ranked_complete(study)[:top]):
        curve = trial.user_attrs.get("curve") or {}
        colour = PALETTE[rank % len(PALETTE)]
        name = f"#{trial.number} ({_fmt(trial.value)})"
        for key, dash, col, legend in (
            ("val_loss", "solid", 1, True),
            ("train_loss", "dot", 1, False),
            ("val_metric", "solid", 2, False),
        ):
            values = curve.get(key) or []
            figure.add_trace(
                go.Scatter(
                    x=curve.get("epoch") or list(range(1, len(values) + 1)),  # epochs kept of a long curve
                    y=values,
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=legend,
                    line={"color": colour, "dash": dash},
                    hovertemplate=f"trial {trial.number} {key}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(
        title=f"Learning curves of the top {top} trials",
        legend_title_text="trial (value)",
        template="none",
        margin={"t": 80},
    )
    return figure


def epochs_figure(study: optuna.Study) -> go.Figure:
    """Epochs spent on complete, pruned and failed trials: in total, and per trial."""
    trials = study.get_trials(deepcopy=False, states=tuple(STATE_COLOURS))
    figure = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("epochs spent, in total", "epochs per trial"),
        horizontal_spacing=0.12,
    )
    for state, colour in STATE_COLOURS.items():
        epochs = [_epochs(t) for t in trials if t.state == state]
        if not epochs:
            continue
        name = state.name.lower()
        figure.add_trace(
            go.Bar(
                x=[name],
                y=[sum(epochs)],
                name=name,
                legendgroup=name,
                marker_color=colour,
                text=[f"{len(epochs)} trials"],
                hovertemplate=f"{name}: %{{y}} epochs in {len(epochs)} trials<extra></extra>",
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Histogram(
                x=epochs,
                name=name,
                legendgroup=name,
                showlegend=False,
                marker_color=colour,
                xbins={"size": 1},
                hovertemplate=f"{name}: %{{y}} trials trained %{{x}} epochs<extra></extra>",
            ),
            row=1,
            col=2,
        )
    figure.update_xaxes(title_text="epochs", row=1, col=2)
    figure.update_yaxes(title_text="epochs", row=1, col=1)
    figure.update_yaxes(title_text="trials", row=1, col=2)
    figure.update_layout(
        title="Epochs spent on complete vs pruned trials", barmode="stack", template="none", margin={"t": 80}
    )
    return figure


def publish(study: optuna.Study, *, best_test: dict[str, Any] | None = None) -> None:
    """Write the note and both graphs to ``study`` (overwriting the previous ones)."""
    save_note(study, study_note(study, best_test=best_test))
    save_plotly_graph_object(study, learning_curves_figure(study), graph_object_id=CURVES_GRAPH)
    save_plotly_graph_object(study, epochs_figure(study), graph_object_id=EPOCHS_GRAPH)


class StudyDashboard:
    """Study callback that keeps the dashboard content of a running study up to date.

    The first finished trial of a new study publishes at once; later ones
    only after ``min_interval`` seconds, and never more often than keeps
    publishing under ``max_share`` of the wall time (the cost grows with the
    number of trials). A resumed study already shows what it holds, so its
    first publish also waits ``min_interval``. Call :meth:`update` once the
    study stops so the last trials show.
    """

    def __init__(self, session: StudySession, *, min_interval: float = 10.0, max_share: float = 0.01) -> None:
        self.session = session
        self.min_interval = min_interval
        self.max_share = max_share
        self._last: float | None = time.monotonic() if session.finished() else None
        self._cost = 0.0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not trial.state.is_finished():
            return
        if self._last is not None:
            wait = max(self.min_interval, self._cost / self.max_share)
            if time.monotonic() - self._last < wait:
                return
        self.update()

    def update(self) -> None:
        """Publish the note and graphs now; a failure is a warning, never the end of the study."""
        started = time.monotonic()
        try:
            try:
                test = self.session.best_test()
            except MissingModelError:  # a missing or damaged model file: show the rest
                test = None
            except Exception as exc:  # the data gone, say: show the rest too
                warnings.warn(f"no test metric on the dashboard: {exc}", stacklevel=2)
                test = None
            publish(self.session.study, best_test=test)
        except Exception as exc:  # the trials matter more than the note
            warnings.warn(
                f"the dashboard content of study {self.session.study.study_name!r} was not updated: {exc}",
                stacklevel=2,
            )
        self._last = time.monotonic()
        self._cost = self._last - started


# --- serving --------------------------------------------------------------------------


def _recorded_artifacts(user_attrs: dict[str, Any]) -> str | None:
    """The artifact folder a study recorded in its configuration, if it recorded one."""
    raw = user_attrs.get(CONFIG_ATTR)
    try:
        config = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (ValueError, TypeError):
        return None
    return config["artifacts"] if isinstance(config.get("artifacts"), str) else None


class StudyArtifactStore:
    """An artifact store over every directory the storage's studies recorded.

    Each optuna-rnn study records its artifact directory; one dashboard shows
    all studies of a storage, so an artifact is looked up in ``primary`` (the
    ``--artifacts`` option or the default beside the database) and then in each
    recorded directory. Given the ``storage_url``, a study is looked up where
    :func:`~optuna_rnn.study.artifacts_folder` finds it: beside a storage file (wherever it moved)
    when it recorded no folder.
    Uploads from the dashboard go to ``primary``. Directories are never created just by looking.
    """

    def __init__(self, storage: BaseStorage, primary: str | Path, *, storage_url: str | None = None) -> None:
        self.storage = storage
        self.primary = Path(primary)
        self.storage_url = storage_url

    def checkpoints_of(self, study_id: int) -> Path | None:
        """The checkpoint folder of study ``study_id`` (in its recorded directory), if it has one."""
        try:
            name = self.storage.get_study_name_from_id(study_id)
            recorded = _recorded_artifacts(self.storage.get_study_user_attrs(study_id))
        except KeyError:
            return None
        folder = checkpoints_dir(self._folder(recorded), name)
        return folder if folder.is_dir() else None

    def _folder(self, recorded: str | None) -> Path:
        """The folder of a study that recorded ``recorded``."""
        if self.storage_url is None:
            return Path(recorded) if recorded is not None else self.primary
        return Path(artifacts_folder(recorded, self.storage_url))

    def directories(self) -> list[Path]:
        """``primary``, then the recorded directories, without duplicates."""
        found = [self.primary]
        for study in self.storage.get_all_studies():
            recorded = _recorded_artifacts(study.user_attrs)
            found.append(self._folder(recorded))
        return list(dict.fromkeys(p.resolve() for p in found))

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for directory in self.directories():
            try:
                return FileSystemArtifactStore(directory).open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of the studies' artifact directories")

    def exists(self, artifact_id: str) -> bool:
        """Whether the artifact's file is in one of the directories."""
        try:
            self.open_reader(artifact_id).close()
        except (ArtifactNotFound, ValueError):  # ValueError: not a valid artifact id
            return False
        return True

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.primary.mkdir(parents=True, exist_ok=True)
        FileSystemArtifactStore(self.primary).write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        """Delete the artifact's file; one that is already gone (``--keep-top``) is not an error.

        optuna-dashboard deletes a study only after removing each of its artifacts, and drops
        a trial's artifact entry only after removing its file: a missing file must not stop
        either, or the study would be half deleted and the entry impossible to clear.
        """
        for directory in self.directories():
            try:
                FileSystemArtifactStore(directory).remove(artifact_id)
                return
            except ArtifactNotFound:
                continue


FINISHED_TRIAL_ARTIFACT = b"a finished trial's artifacts cannot be removed: Optuna forbids changing it"
MISSING_MODEL = (
    b"This trial's model file is not in the artifact store: the study keeps only its best trials' "
    b"weights (run --keep-top), or the artifact directory moved (optuna-rnn dashboard --artifacts DIR).\n"
)
_ARTIFACT_PATH = re.compile(r"/artifacts/\d+/(?:\d+/)?(?P<artifact_id>[0-9a-fA-F-]+)/?")
_STUDY_API = re.compile(r"/api/studies/(?P<id>\d+)/?")
_TRIAL_ARTIFACT_API = re.compile(r"/api/artifacts/\d+/(?P<trial_id>\d+)/[0-9a-fA-F-]+/?")


def missing_artifacts_as_404(app: WSGIApplication, store: StudyArtifactStore) -> WSGIApplication:
    """Wrap optuna-dashboard so that a removed file answers 404 with a reason, not 500.

    optuna-dashboard answers 500 (and logs a traceback) when an artifact's file
    is gone, which ``--keep-top`` makes an ordinary state. Deleting a finished
    trial's artifact through its API removed the file and then failed (Optuna
    forbids changing a finished trial), leaving an entry that points at nothing:
    that request answers 409 and removes nothing. Deleting a study also removes
    the checkpoints its stopped runs left, which no artifact entry lists.
    """

    def app_404(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        match = _ARTIFACT_PATH.fullmatch(path)
        if match and method in ("GET", "HEAD") and not store.exists(match["artifact_id"]):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [] if method == "HEAD" else [MISSING_MODEL]
        study = _STUDY_API.fullmatch(path)
        if study and method == "DELETE":  # the dashboard removes the study's models, not its checkpoints
            return _removing_checkpoints(app, environ, start_response, store.checkpoints_of(int(study["id"])))
        trial = _TRIAL_ARTIFACT_API.fullmatch(path)
        if trial and method == "DELETE" and _finished(store.storage, int(trial["trial_id"])):
            start_response("409 Conflict", [("Content-Type", "text/plain; charset=utf-8")])
            return [FINISHED_TRIAL_ARTIFACT]
        return app(environ, start_response)

    return app_404


def _removing_checkpoints(
    app: WSGIApplication, environ: dict[str, Any], start_response: StartResponse, folder: Path | None
) -> Iterable[bytes]:
    """Pass a study's deletion on; once it succeeded, remove the checkpoints its stopped runs left."""
    statuses: list[str] = []

    def recording(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return start_response(status, headers, exc_info)

    body = app(environ, recording)
    if folder is not None and statuses and statuses[-1].startswith("2"):
        shutil.rmtree(folder, ignore_errors=True)
        tidy_checkpoints(folder)
    return body


def _finished(storage: BaseStorage, trial_id: int) -> bool:
    try:
        return storage.get_trial(trial_id).state.is_finished()
    except KeyError:  # no such trial: optuna-dashboard answers
        return False


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """wsgiref with a thread per request, as the optuna-dashboard command uses."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
        pass


def serve(
    storage: BaseStorage,
    *,
    artifacts: str | Path,
    storage_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard for ``storage`` until interrupted.

    ``artifacts`` is the primary artifact directory, and ``storage_url`` tells where the studies
    that recorded none keep theirs (see :class:`StudyArtifactStore`). ``port`` 0 picks a free
    port; ``on_ready`` gets the dashboard's URL once the server listens. A port in use raises
    :class:`UsageError`.
    """
    from optuna_dashboard import wsgi

    store = StudyArtifactStore(storage, artifacts, storage_url=storage_url)
    app = missing_artifacts_as_404(wsgi(storage, artifact_store=store), store)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]  # IPv4 or IPv6
        server_class = type("_Server", (_ThreadingServer,), {"address_family": family})
        server: WSGIServer = make_server(
            host, port, app, server_class=server_class, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    with server:
        bound_port = server.server_address[1]
        shown_host = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown_host}:{bound_port}/dashboard/")
        server.serve_forever()
