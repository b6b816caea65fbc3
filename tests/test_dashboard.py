"""optuna-dashboard on real studies: notes, graphs, artifacts, `optuna-rnn dashboard`, Chromium."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from optuna_dashboard import get_note

from optuna_rnn import MissingModelError, load_best_model, load_model_file
from optuna_rnn import dashboard as dashboard_module
from optuna_rnn.artifacts import (
    ARTIFACT_ATTR,
    MODEL_MIMETYPE,
    KeepTopModels,
    artifact_store,
    download_model_payload,
    ranked_complete,
    upload_model,
)
from optuna_rnn.config import CONFIG_ATTR
from optuna_rnn.dashboard import CURVES_GRAPH, EPOCHS_GRAPH, StudyArtifactStore
from optuna_rnn.recovery import checkpoints_dir
from optuna_rnn.study import open_storage
from tests.browser import (
    chromium_available,
    chromium_page,
    dashboard_server,
    delete,
    get,
    get_json,
    study_page_screenshot,
)
from tests.conftest import TunedStudy, require_service


def load(tuned: TunedStudy) -> optuna.Study:
    return optuna.load_study(study_name=tuned.name, storage=tuned.storage)


def same_predictions(a: torch.nn.Module, b: torch.nn.Module, input_size: int) -> bool:
    x = torch.randn(32, 8, input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


def test_dashboard_serves_trials_note_graphs_and_the_best_model(tuned_study, tmp_path) -> None:
    study = load(tuned_study)
    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert complete and pruned
    best = study.best_trial
    with dashboard_server(tuned_study.storage, cwd=tuned_study.folder) as base:
        listed = {s["study_name"]: s["study_id"] for s in get_json(base, "/api/studies")["study_summaries"]}
        assert tuned_study.name in listed
        study_id = listed[tuned_study.name]
        detail = get_json(base, f"/api/studies/{study_id}")

        # Trials, their states, every epoch's intermediate value and the table's user attrs.
        served = {t["number"]: t for t in detail["trials"]}
        assert sorted(served) == [t.number for t in trials]
        for trial in trials:
            got = served[trial.number]
            assert got["state"].upper() == trial.state.name
            assert {v["step"]: v["value"] for v in got["intermediate_values"]} == trial.intermediate_values
            assert len(trial.intermediate_values) == trial.user_attrs["epochs"]
        assert detail["has_intermediate_values"]
        columns = {a["key"] for a in detail["union_user_attrs"]}
        assert {"n_params", "epochs", "seconds", "stop_reason", "best_epoch"} <= columns

        # The note: data, splits, space, sampler, pruner, progress, best trial and its test metric.
        note = detail["note"]["body"]
        test = study.user_attrs["optuna_rnn.best_test"]
        assert test["trial"] == best.number
        assert f"**Trial #{best.number}**: validation accuracy **{best.value:.4g}**" in note
        assert f"test accuracy **{test['test_value']:.4g}**" in note
        for split, size in study.user_attrs["optuna_rnn.data"]["splits"].items():
            assert f"| {split} | {size} |" in note
        assert "| `hidden_size` | 4 – 12, log |" in note and "| `num_layers` | fixed: 1 |" in note
        assert "sampler: **tpe** (seed 0)" in note and "pruner: **median**" in note
        assert f"| {len(complete)} | {len(pruned)} | 0 | 0 |" in note
        assert "best 3 trials kept" in note

        # The plotly graphs: curves of the top trials, epochs by state.
        graphs = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
        assert set(graphs) == {CURVES_GRAPH, EPOCHS_GRAPH}
        curves = graphs[CURVES_GRAPH]["data"]
        shown = [int(re.match(r"#(\d+)", t["name"]).group(1)) for t in curves if t.get("showlegend")]
        assert shown == [t.number for t in ranked_complete(study)[:5]]
        assert curves[0]["y"] == best.user_attrs["curve"]["val_loss"]
        assert curves[1]["y"] == best.user_attrs["curve"]["train_loss"]
        assert curves[2]["y"] == best.user_attrs["curve"]["val_metric"]
        totals = {t["name"]: t["y"][0] for t in graphs[EPOCHS_GRAPH]["data"] if t["type"] == "bar"}
        assert totals == {
            "complete": sum(t.user_attrs["epochs"] for t in complete),
            "pruned": sum(t.user_attrs["epochs"] for t in pruned),
        }

        # The best trial's weights download from the dashboard and predict like load_best_model.
        (artifact,) = served[best.number]["artifacts"]
        assert artifact["artifact_id"] == best.user_attrs[ARTIFACT_ATTR]
        url = f"/artifacts/{study_id}/{served[best.number]['trial_id']}/{artifact['artifact_id']}"
        status, headers, body = get(base, url)

        # A model removed by --keep-top answers 404 with the reason, not optuna-dashboard's 500.
        dropped = served[ranked_complete(study)[3].number]
        (gone,) = dropped["artifacts"]
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(base, f"/artifacts/{study_id}/{dropped['trial_id']}/{gone['artifact_id']}")
        assert missing.value.code == 404 and b"--keep-top" in missing.value.read()
        gone_url = f"{base}/artifacts/{study_id}/{dropped['trial_id']}/{gone['artifact_id']}"
        for request in (urllib.request.Request(gone_url, method="HEAD"), gone_url + "/"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(request, timeout=30)
            assert missing.value.code == 404
        # Deleting a finished trial's model through the API would remove the file, then fail.
        with pytest.raises(urllib.error.HTTPError) as refused:
            delete(
                base, f"/api/artifacts/{study_id}/{served[best.number]['trial_id']}/{artifact['artifact_id']}"
            )
        assert refused.value.code == 409
        assert (tuned_study.folder / "optuna-rnn-artifacts" / artifact["artifact_id"]).exists()
    assert status == 200 and headers["Content-Type"] == MODEL_MIMETYPE
    (tmp_path / "downloaded.pt").write_bytes(body)
    payload = torch.load(tmp_path / "downloaded.pt", map_location="cpu", weights_only=True)
    downloaded = load_model_file(tmp_path / "downloaded.pt")
    reference = load_best_model(tuned_study.name, storage=tuned_study.storage)
    assert isinstance(reference, torch.nn.Module) and not reference.training
    assert same_predictions(downloaded, reference, payload["input_size"])


@pytest.mark.services
def test_dashboard_renders_in_chromium(tuned_study, tmp_path) -> None:
    require_service("Chromium (/usr/bin/chromium) with Playwright", chromium_available)
    study = load(tuned_study)
    with dashboard_server(tuned_study.storage, cwd=tuned_study.folder) as base, chromium_page() as page:
        listed = get_json(base, "/api/studies")["study_summaries"]
        study_id = next(s["study_id"] for s in listed if s["study_name"] == tuned_study.name)
        page.goto(f"{base}/dashboard")
        page.get_by_text(tuned_study.name).first.wait_for()
        assert tuned_study.name in page.inner_text("body")
        page.goto(f"{base}/dashboard/studies/{study_id}/trials")
        page.get_by_text(f"{len(study.trials)} Trials", exact=True).wait_for()
        shot = tmp_path / "dashboard.png"
        study_page_screenshot(page, base, study_id, shot)
        assert f"{tuned_study.name} (id={study_id})" in page.inner_text("body")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_note_is_published_as_the_study_runs_and_throttled(tmp_path, tiny_space) -> None:
    from optuna_dashboard import get_note

    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace
    from optuna_rnn.study import open_session, run_trials

    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(tiny_space)}
    given |= {"max_epochs": 2, "seed": 0, "pruner": "none"}
    session = open_session("notes", storage=f"sqlite:///{tmp_path / 'n.db'}", given=given, create=True)
    seen: list[tuple[float, str]] = []
    run_trials(
        session,
        n_trials=3,
        progress=False,
        callbacks=[lambda study, _: seen.append((time.monotonic(), get_note(study)))],
    )
    first = "| 1 | 0 | 0 | 0 |"  # complete, pruned, failed, running: published after the first trial
    assert first in seen[0][1]
    throttled = [note for at, note in seen[1:] if at - seen[0][0] < 9]  # within the 10 s interval
    assert throttled and all(first in note for note in throttled)
    final = get_note(session.study)
    assert "| 3 | 0 | 0 | 0 |" in final and f"**Trial #{session.study.best_trial.number}**" in final

    # Resumed, the study already shows its 3 trials: the next trial does not republish at once,
    # and the end of the run does.
    started = time.monotonic()
    seen.clear()
    run_trials(
        session,
        n_trials=4,
        progress=False,
        callbacks=[lambda study, _: seen.append((time.monotonic(), get_note(study)))],
    )
    assert len(seen) == 1
    if seen[0][0] - started < 9:
        assert "| 3 | 0 | 0 | 0 |" in seen[0][1]
    assert "| 4 | 0 | 0 | 0 |" in get_note(session.study)


def test_dashboard_deletes_a_keep_top_study_with_its_kept_models(
    cli_in_process, tmp_path, tiny_space
) -> None:
    args = ("--keep-top", "1", "--n-trials", "3", "--max-epochs", "1", "--pruner", "none", "--seed", "0")
    out = cli_in_process("run", "--dataset", "digits", "--space", str(tiny_space), *args, "-q")
    assert out.returncode == 0, out.stderr
    storage = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    models = tmp_path / "optuna-rnn-artifacts"
    kept, *dropped = ranked_complete(optuna.load_study(study_name="digits", storage=storage))
    assert [p.name for p in models.iterdir()] == [kept.user_attrs[ARTIFACT_ATTR]] and dropped
    leftover = checkpoints_dir(models, "digits") / "trial-7.pt"  # as a run stopped by a signal leaves
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"state")
    with dashboard_server(storage, cwd=tmp_path) as base:
        (summary,) = get_json(base, "/api/studies")["study_summaries"]
        # the dashboard removes each model the study lists, then the study: the files
        # --keep-top removed already must not stop it halfway
        assert delete(base, f"/api/studies/{summary['study_id']}") == 204
        assert get_json(base, "/api/studies")["study_summaries"] == []
    assert optuna.get_all_study_names(storage) == []
    assert list(models.iterdir()) == []


def test_dashboard_listens_on_ipv6(tuned_study) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    with dashboard_server(tuned_study.storage, cwd=tuned_study.folder, extra=("--host", "::1")) as base:
        assert base.startswith("http://[::1]:")
        names = [s["study_name"] for s in get_json(base, "/api/studies")["study_summaries"]]
    assert names == [tuned_study.name]


def test_dashboard_refuses_a_missing_storage_and_creates_nothing(run_cli, tmp_path) -> None:
    cases = [
        (("--storage", "sqlite:///missing.db"), "storage sqlite:///missing.db does not exist"),
        ((), "storage sqlite:///optuna-rnn.db does not exist"),  # the default storage
    ]
    for args, message in cases:
        out = run_cli("dashboard", *args, "--port", "0")
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip() == f"optuna-rnn: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_readers_refuse_a_database_that_is_not_optunas_and_leave_it_alone(run_cli, tmp_path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db:
        db.execute("CREATE TABLE mine (x INTEGER)")
        db.commit()
    (tmp_path / "notes.db").write_text("not a database\n")
    for name in ("other.db", "notes.db"):
        storage = f"sqlite:///{name}"
        for args in (("dashboard", "--port", "0"), ("best", "--study", "s"), ("report", "--study", "s")):
            extra = ("--out", "rep") if args[0] == "report" else ()
            out = run_cli(*args, "--storage", storage, *extra, timeout=60)  # a served dashboard never ends
            assert out.returncode == 2, (args, out.stderr)
            assert out.stderr.strip() == f"optuna-rnn: error: storage {storage} is not an Optuna database"
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("mine",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db", "other.db"]


def test_readers_neither_wait_for_a_worker_holding_the_write_lock_nor_stumble_on_odd_names(tmp_path) -> None:
    path = tmp_path / "runs #1 100%.db"
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="s", storage=open_storage(url))
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # a worker in the middle of a write
    try:
        started = time.monotonic()
        reader = open_storage(url, must_exist=True, for_reading=True)
        assert [s.study_name for s in reader.get_all_studies()] == ["s"]
        assert time.monotonic() - started < 5
    finally:
        holder.rollback()
        holder.close()


def test_dashboard_reports_a_port_in_use(run_cli, tuned_study) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("dashboard", "--storage", tuned_study.storage, "--port", str(port), timeout=60)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


def test_keep_top_keeps_only_the_best_models(tuned_study) -> None:
    study = load(tuned_study)
    ranked = ranked_complete(study)
    assert len(ranked) > 3
    folder = tuned_study.folder / "optuna-rnn-artifacts"
    assert sorted(p.name for p in folder.iterdir()) == sorted(t.user_attrs[ARTIFACT_ATTR] for t in ranked[:3])
    store = artifact_store(folder)
    assert (
        download_model_payload(store, ranked[2])["hyperparams"]["hidden_size"]
        == ranked[2].params["hidden_size"]
    )
    with pytest.raises(LookupError, match=f"model of trial {ranked[3].number} is missing"):
        download_model_payload(store, ranked[3])


def test_keep_top_removes_the_model_of_a_trial_that_failed_after_saving_it(tmp_path) -> None:
    # As when a worker is killed between saving the model and telling the trial COMPLETE.
    store = artifact_store(tmp_path / "artifacts")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    upload_model(store, trial, {"weights": torch.zeros(2)})
    study.tell(trial, state=TrialState.FAIL)
    orphan = study.trials[0].user_attrs[ARTIFACT_ATTR]
    # A failed trial whose retry still names its file (a retry inherits user attrs) keeps it.
    trial = study.ask()
    upload_model(store, trial, {"weights": torch.zeros(2)})
    study.tell(trial, state=TrialState.FAIL)
    inherited = study.trials[1].user_attrs[ARTIFACT_ATTR]
    study.enqueue_trial({}, user_attrs={ARTIFACT_ATTR: inherited})
    assert (tmp_path / "artifacts" / orphan).exists() and (tmp_path / "artifacts" / inherited).exists()
    study.optimize(lambda t: 1.0, n_trials=1, callbacks=[KeepTopModels(store, 3)])
    assert not (tmp_path / "artifacts" / orphan).exists()
    assert (tmp_path / "artifacts" / inherited).exists()


def test_keep_top_removes_the_model_a_pruned_retry_inherited(tmp_path) -> None:
    store = artifact_store(tmp_path / "artifacts")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    upload_model(store, trial, {"weights": torch.zeros(2)})
    study.tell(trial, state=TrialState.FAIL)  # killed after saving its model
    dead = study.trials[0].user_attrs[ARTIFACT_ATTR]
    study.enqueue_trial({}, user_attrs={ARTIFACT_ATTR: dead})  # its retry, which is then pruned

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 1:
            raise optuna.TrialPruned()
        return 1.0

    study.optimize(objective, n_trials=2, callbacks=[KeepTopModels(store, 3)])
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]
    assert not (tmp_path / "artifacts" / dead).exists()  # was kept for good


def test_dashboard_store_finds_artifacts_in_recorded_directories_or_beside_the_database(
    tuned_study, tmp_path
) -> None:
    study = load(tuned_study)
    primary = tmp_path / "elsewhere"
    storage = open_storage(tuned_study.storage, must_exist=True)
    store = StudyArtifactStore(storage, primary, storage_url=tuned_study.storage)
    with store.open_reader(study.best_trial.user_attrs[ARTIFACT_ATTR]) as reader:
        assert reader.read(2) == b"PK"  # torch.save writes a zip archive
    with pytest.raises(optuna.artifacts.exceptions.ArtifactNotFound):
        store.open_reader("00000000-0000-0000-0000-000000000000")
    assert not primary.exists()  # looking never creates directories


def test_best_export_reloads_with_weights_only(cli_in_process, tuned_study, tmp_path) -> None:
    out = cli_in_process(
        "best", "--study", tuned_study.name, "--storage", tuned_study.storage, "--export", "best.pt"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["exported"] == str(tmp_path / "best.pt")
    payload = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == "optuna-rnn/1" and payload["hyperparams"]["cell"] in ("lstm", "gru")
    exported = load_model_file(tmp_path / "best.pt")
    reference = load_best_model(tuned_study.name, storage=tuned_study.storage)
    assert same_predictions(exported, reference, payload["input_size"])


def test_load_best_model_of_a_study_run_with_your_own_objective_setup(tmp_path) -> None:
    from optuna_rnn import Objective, SearchSpace, load_dataset

    data = load_dataset("digits")
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, bidirectional=False, batch_size=256)
    objective = Objective(data, space=space, max_epochs=1, device="cpu", seed=0, artifacts=store)
    storage = f"sqlite:///{tmp_path / 'mine.db'}"
    optuna.create_study(study_name="mine", storage=storage, direction=objective.direction).optimize(
        objective, n_trials=1
    )
    model = load_best_model("mine", storage=storage, artifacts=tmp_path / "models")
    assert model(torch.zeros(2, 8, data.input_size)).shape == (2, data.output_size)
    with pytest.raises(ValueError, match="study 'mine' was not created by optuna-rnn: give artifacts="):
        load_best_model("mine", storage=storage)


def test_load_best_model_errors(tuned_study, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"no study named 'nope' in sqlite:.* \(studies there: digits\)"):
        load_best_model("nope", storage=tuned_study.storage)
    with pytest.raises(ValueError, match="does not exist"):
        load_best_model("digits", storage=f"sqlite:///{tmp_path / 'absent.db'}")
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(LookupError, match="missing from the artifact store"):
        load_best_model(tuned_study.name, storage=tuned_study.storage, artifacts=tmp_path / "empty")
    assert not (tmp_path / "empty").exists()  # looking creates nothing


def test_a_relative_artifacts_dir_from_the_python_api_is_recorded_absolute(
    tmp_path, tiny_space, monkeypatch
) -> None:
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace
    from optuna_rnn.study import open_session, run_trials

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 'rel.db'}"
    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(tiny_space)}
    given |= {"max_epochs": 1, "seed": 0, "artifacts": "models"}
    session = open_session("rel", storage=storage, given=given, create=True)
    run_trials(session, n_trials=1, progress=False)
    assert session.config.artifacts == str(tmp_path / "models")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # another process, another working directory
    assert isinstance(load_best_model("rel", storage=storage), torch.nn.Module)


def test_a_failed_dashboard_update_is_a_warning_and_the_study_goes_on(
    tmp_path, tiny_space, monkeypatch
) -> None:
    from optuna_rnn.dashboard import StudyDashboard
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace
    from optuna_rnn.study import BEST_TEST_ATTR, open_session, run_trials

    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(tiny_space)}
    given |= {"max_epochs": 1, "seed": 0, "pruner": "none"}
    session = open_session("bad", storage=f"sqlite:///{tmp_path / 'b.db'}", given=given, create=True)
    run_trials(session, n_trials=1, progress=False)
    best = session.best_trial()
    assert best is not None
    dashboard = StudyDashboard(session, min_interval=0.0)
    for junk in (b"not a model", b"hello world\n"):  # torch fails on these with different errors
        (Path(session.artifacts_dir) / best.user_attrs[ARTIFACT_ATTR]).write_bytes(junk)
        session.study.set_user_attr(BEST_TEST_ATTR, None)  # so that the next publish reads the file
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dashboard(session.study, best)  # a damaged model: everything but the test metric is shown
        note = get_note(session.study)
        assert f"**Trial #{best.number}**: validation accuracy" in note and "test accuracy" not in note
        with pytest.raises(MissingModelError, match=f"the model file of trial {best.number} is unreadable"):
            session.best_test()

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dashboard_module, "publish", full_disk)
    with pytest.warns(UserWarning, match="dashboard content of study 'bad' was not updated: .*No space left"):
        dashboard.update()  # what the study's callback calls after a trial: it must not raise


def test_best_and_report_answer_from_a_storage_they_cannot_write(
    cli_in_process, tmp_path, tiny_space
) -> None:
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace
    from optuna_rnn.study import BEST_TEST_ATTR, open_session, run_trials

    journal = tmp_path / "study.log"
    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(tiny_space)}
    session = open_session("ro", storage=str(journal), given={**given, "max_epochs": 1}, create=True)
    run_trials(session, n_trials=1, progress=False)
    session.study.set_user_attr(BEST_TEST_ATTR, None)  # not recorded yet: a reader computes it
    # Immutable even for root (tests run as root, where file modes do not stop a write).
    if subprocess.run(["chattr", "+i", str(journal)], capture_output=True).returncode != 0:
        pytest.skip("chattr cannot make the journal read-only on this file system")
    try:
        for args in (("best", "--study", "ro"), ("report", "--study", "ro", "--out", "report")):
            out = cli_in_process(*args, "--storage", str(journal))
            assert out.returncode == 0, out.stderr
        assert (
            json.loads(cli_in_process("best", "--study", "ro", "--storage", str(journal)).stdout)[
                "test_metric"
            ]
            > 0
        )
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)
    stored = optuna.load_study(study_name="ro", storage=open_storage(str(journal), must_exist=True))
    assert stored.user_attrs.get(BEST_TEST_ATTR) is None  # nothing was written


def _recorded_config(storage: str, study: str) -> dict[str, object]:
    return json.loads(optuna.load_study(study_name=study, storage=storage).user_attrs[CONFIG_ATTR])


def _set_recorded_artifacts(storage: str, study: str, folder: str) -> None:
    loaded = optuna.load_study(study_name=study, storage=storage)
    loaded.set_user_attr(CONFIG_ATTR, json.dumps(_recorded_config(storage, study) | {"artifacts": folder}))


@pytest.mark.parametrize("recorded_absolute", [False, True], ids=["new", "recorded-by-an-earlier-version"])
def test_a_moved_project_folder_keeps_its_models(
    cli_in_process, tmp_path, tiny_space, recorded_absolute
) -> None:
    project, moved = tmp_path / "project", tmp_path / "moved"
    project.mkdir()

    def db(folder: Path) -> str:
        return f"sqlite:///{folder / 'optuna-rnn.db'}"

    args = ("--space", str(tiny_space), "--max-epochs", "1", "--seed", "0", "-q")
    out = cli_in_process(
        "run", "--dataset", "digits", "--study", "mv", "--storage", db(project), *args, "--n-trials", "1"
    )
    assert out.returncode == 0, out.stderr
    assert _recorded_config(db(project), "mv")["artifacts"] is None  # the default: beside the database
    if recorded_absolute:
        _set_recorded_artifacts(db(project), "mv", str(project / "optuna-rnn-artifacts"))
    project.rename(moved)

    out = cli_in_process(
        "best", "--study", "mv", "--storage", db(moved), "--export", str(tmp_path / "best.pt")
    )
    assert out.returncode == 0, out.stderr
    named = ("--artifacts", str(moved / "optuna-rnn-artifacts"))  # the default, named: no mismatch
    out = cli_in_process("run", "--study", "mv", "--storage", db(moved), "--n-trials", "2", "-q", *named)
    assert out.returncode == 0, out.stderr
    assert not project.exists()  # nothing re-created at the old place
    study = optuna.load_study(study_name="mv", storage=db(moved))
    saved = [t.user_attrs[ARTIFACT_ATTR] for t in study.trials if t.state == TrialState.COMPLETE]
    assert saved and all((moved / "optuna-rnn-artifacts" / a).is_file() for a in saved)
    assert isinstance(load_best_model("mv", storage=db(moved)), torch.nn.Module)
    store = StudyArtifactStore(open_storage(db(moved)), tmp_path / "elsewhere", storage_url=db(moved))
    assert store.directories() == [tmp_path / "elsewhere", moved / "optuna-rnn-artifacts"]
    out = cli_in_process("run", "--study", "mv", "--storage", db(moved), "--artifacts", str(tmp_path / "x"))
    assert out.returncode == 2
    if not recorded_absolute:
        assert "study was created with its artifacts beside the storage file (the default)" in out.stderr


def test_a_copied_project_of_an_earlier_version_does_not_quietly_share_the_originals_models(
    cli_in_process, tmp_path, tiny_space
) -> None:
    project, copy = tmp_path / "project", tmp_path / "copy"
    project.mkdir()
    url = f"sqlite:///{project / 'optuna-rnn.db'}"
    args = ("--space", str(tiny_space), "--max-epochs", "1", "--seed", "0", "-q")
    out = cli_in_process(
        "run", "--dataset", "digits", "--study", "cp", "--storage", url, *args, "--n-trials", "1"
    )
    assert out.returncode == 0, out.stderr
    _set_recorded_artifacts(url, "cp", str(project / "optuna-rnn-artifacts"))  # as earlier versions did
    shutil.copytree(project, copy)
    copied = f"sqlite:///{copy / 'optuna-rnn.db'}"
    named = ("--artifacts", str(copy / "optuna-rnn-artifacts"))  # the copy's own folder, asked for
    out = cli_in_process("run", "--study", "cp", "--storage", copied, "--n-trials", "2", *named)
    assert out.returncode == 2
    assert f"study was created with artifacts='{project / 'optuna-rnn-artifacts'}'" in out.stderr


def test_a_recorded_artifacts_folder_that_cannot_be_made_is_a_usage_error(
    cli_in_process, tmp_path, tiny_space
) -> None:
    storage = f"sqlite:///{tmp_path / 'copied.db'}"
    args = ("--space", str(tiny_space), "--max-epochs", "1", "--seed", "0", "-q", "--storage", storage)
    assert (
        cli_in_process("run", "--dataset", "digits", "--study", "c", "--n-trials", "1", *args).returncode == 0
    )
    (tmp_path / "a-file").write_text("")
    _set_recorded_artifacts(storage, "c", str(tmp_path / "a-file" / "models"))  # like another machine's path
    out = cli_in_process("run", "--study", "c", "--n-trials", "2", *args)
    assert out.returncode == 2
    optuna.load_study(study_name="c", storage=storage).ask().set_user_attr("worker_id", "elsewhere|b|n|1|2")
    retried = cli_in_process("run", "--study", "c", "--n-trials", "2", "--retry-trial", "1", *args)
    assert retried.returncode == 2 and "Traceback" not in retried.stderr  # its claim goes in that folder
    assert "which cannot be created here" in retried.stderr
    assert (
        f"study 'c' saves its models in {tmp_path / 'a-file' / 'models'}, which cannot be created here"
        in out.stderr
    )
    assert "Traceback" not in out.stderr
