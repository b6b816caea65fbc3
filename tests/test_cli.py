"""The `optuna-rnn` command end to end, on real SQLite studies."""

from __future__ import annotations

import json
import math
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from optuna_dashboard import get_note, save_note

from optuna_rnn import load_dataset
from optuna_rnn.dashboard import study_note
from optuna_rnn.errors import UsageError
from optuna_rnn.report import summary_markdown
from optuna_rnn.study import open_session
from tests.conftest import cli_command, cli_env

FAST = ("--max-epochs", "6", "--seed", "0", "-q")


def load(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna-rnn.db'}")


def states(study: optuna.Study) -> dict[TrialState, int]:
    return {s: sum(t.state == s for t in study.trials) for s in TrialState}


def snapshot(study: optuna.Study) -> tuple:
    return (
        [(t.number, t.state, t.value, t.params, t.user_attrs) for t in study.trials],
        study.user_attrs,
    )


def test_datasets_and_version(run_cli) -> None:
    out = run_cli("datasets")
    assert out.returncode == 0
    assert "digits" in out.stdout and "sunspots" in out.stdout and "forecasting" in out.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("optuna-rnn ")


def test_the_command_runs_from_a_source_tree_that_was_never_installed(monkeypatch, capsys) -> None:
    # On PYTHONPATH without pip install there is no package metadata: every command used to crash.
    from importlib.metadata import PackageNotFoundError

    from optuna_rnn import cli

    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(cli, "version", not_installed)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == "optuna-rnn (not installed: running from a source tree)\n"
    assert cli.main(["datasets"]) == 0


def test_the_command_does_not_import_scikit_learn_until_data_is_split() -> None:
    # scikit-learn's model selection adds about a second to every command that never splits data.
    code = "import sys, optuna_rnn.cli; print('sklearn.model_selection' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_median_pruner_leaves_pruned_trials_stopped_at_their_epoch(
    cli_in_process, tmp_path, tiny_space
) -> None:
    out = cli_in_process(
        "run",
        "--dataset",
        "digits",
        "--n-trials",
        "20",
        "--pruner",
        "median",
        "--space",
        str(tiny_space),
        *FAST,
    )
    assert out.returncode == 0, out.stderr
    assert "Best trial #" in out.stdout and "optuna-dashboard" in out.stdout
    study = load(tmp_path, "digits")
    count = states(study)
    assert count[TrialState.COMPLETE] + count[TrialState.PRUNED] == 20
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner pruned nothing in 20 trials"
    for trial in pruned:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(1, len(steps) + 1))
        assert steps[-1] == trial.user_attrs["epochs"]
        assert trial.user_attrs["stop_reason"] == f"pruned at epoch {steps[-1]}"
    assert any(max(t.intermediate_values) < 6 for t in pruned)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for trial in complete:
        attrs = trial.user_attrs
        assert attrs["n_params"] > 0 and attrs["seconds"] > 0 and attrs["epochs"] >= 1
        assert trial.value == pytest.approx(max(attrs["curve"]["val_metric"]), abs=1e-6)
    assert study.user_attrs["optuna_rnn.best_test"]["trial"] == study.best_trial.number


def test_rerun_resumes_and_n_trials_is_the_total(cli_in_process, tmp_path, tiny_space) -> None:
    args = ("run", "--dataset", "digits", "--space", str(tiny_space), *FAST)
    assert cli_in_process(*args, "--n-trials", "3").returncode == 0
    assert cli_in_process(*args, "--n-trials", "3").returncode == 0  # nothing left to do
    assert len(load(tmp_path, "digits").trials) == 3
    out = cli_in_process("run", "--study", "digits", "--n-trials", "5", "-q")  # resume by name only
    assert out.returncode == 0, out.stderr
    params = [t.params for t in load(tmp_path, "digits").trials]
    assert len(params) == 5
    assert all(params[i] != params[j] for j in range(5) for i in range(j)), "a resumed run repeated a trial"
    # Without --n-trials, a worker or a resumed run aims at the last run's total, not at 30.
    out = cli_in_process("worker", "--study", "digits", "-q")
    assert out.returncode == 0, out.stderr
    assert "study 'digits' holds 5 finished trials" in out.stdout
    assert cli_in_process("run", "--study", "digits", "-q").returncode == 0
    assert len(load(tmp_path, "digits").trials) == 5


def test_seed_makes_a_study_repeatable(cli_in_process, tmp_path, tiny_space) -> None:
    for name in ("a", "b"):
        out = cli_in_process(
            "run",
            "--dataset",
            "digits",
            "--study",
            name,
            "--n-trials",
            "4",
            "--space",
            str(tiny_space),
            "--pruner",
            "none",
            *FAST,
        )
        assert out.returncode == 0, out.stderr
    a, b = load(tmp_path, "a"), load(tmp_path, "b")
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == [t.value for t in b.trials]


def test_sigint_fails_the_running_trial_and_rerun_finishes(tmp_path) -> None:
    # epochs of tens of ms, so the trial seen running is still running when SIGINT lands
    space = tmp_path / "slow.toml"
    space.write_text(
        'cell = "lstm"\nhidden_size = 48\nnum_layers = 1\nbidirectional = false\nbatch_size = 32\n'
    )
    args = (
        "run",
        "--dataset",
        "digits",
        "--n-trials",
        "4",
        "--space",
        str(space),
        "--max-epochs",
        "40",
        "--patience",
        "40",
        "--pruner",
        "none",
        "--seed",
        "1",
        "-q",
    )
    proc = subprocess.Popen(
        cli_command(*args),
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            trials = optuna.load_study(study_name="digits", storage=db).trials
        except KeyError:
            continue
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if done and running and running[0].intermediate_values:
            break
    else:
        proc.kill()
        raise AssertionError("no trial was running")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "interrupted; the running trial was closed as FAIL" in err and "Traceback" not in err
    study = load(tmp_path, "digits")
    count = states(study)
    assert count[TrialState.RUNNING] == 0
    assert count[TrialState.FAIL] == 1
    interrupted = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert interrupted.number == running[0].number
    rerun = subprocess.run(
        cli_command(*args), cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    count = states(load(tmp_path, "digits"))
    assert count[TrialState.COMPLETE] + count[TrialState.PRUNED] == 4
    assert not (tmp_path / "optuna-rnn-artifacts" / "checkpoints").exists()  # claims and files tidied
    assert count[TrialState.RUNNING] == 0 and count[TrialState.FAIL] == 1
    assert "1 failed (1 of them retried)" in rerun.stdout  # not a failure left behind


def test_diverging_trials_are_recorded_and_the_study_goes_on(cli_in_process, tmp_path) -> None:
    space = tmp_path / "diverge.toml"
    space.write_text(
        'cell = "lstm"\nhidden_size = 8\nnum_layers = 1\nbidirectional = false\n'
        'optimizer = "sgd"\nlr = {low = 10.0, high = 50.0, log = true}\ngrad_clip = "none"\n'
        "window = 8\nbatch_size = 32\n"
    )
    out = cli_in_process("run", "--dataset", "sunspots", "--n-trials", "5", "--space", str(space), *FAST)
    assert out.returncode == 0, out.stderr
    study = load(tmp_path, "sunspots")
    assert len(study.trials) == 5
    diverged = [t for t in study.trials if t.user_attrs.get("stop_reason", "").startswith("diverged")]
    assert len(diverged) >= 3
    assert all(t.state == TrialState.PRUNED for t in diverged)


def test_best_prints_json(cli_in_process, tmp_path, tiny_space) -> None:
    assert (
        cli_in_process(
            "run", "--dataset", "sunspots", "--n-trials", "3", "--space", str(tiny_space), *FAST
        ).returncode
        == 0
    )
    out = cli_in_process("best", "--study", "sunspots", "--export", "best.pt")
    assert out.returncode == 0, out.stderr
    best = json.loads(out.stdout)
    study = load(tmp_path, "sunspots")
    assert best["trial_number"] == study.best_trial.number
    assert best["validation_value"] == study.best_value
    assert best["metric"] == "rmse" and best["test_metric"] > 0
    assert best["params"] == study.best_trial.params
    assert (tmp_path / "best.pt").exists()
    # The naive baseline beside it: persistence, the target's value a horizon (1) earlier.
    series = load_dataset("sunspots")
    _, start = series.bounds
    y = series.values[:, 0].astype(np.float64)
    naive = float(np.sqrt(np.mean((y[start:] - y[start - 1 : -1]) ** 2)))
    assert best["baseline"]["name"] == "persistence (the last known value)"
    assert best["baseline"]["test"] == pytest.approx(naive) and best["baseline"]["valid"] > 0
    assert "Naive baseline, persistence (the last known value): validation " in study_note(study)
    assert "Naive baseline, persistence (the last known value): validation " in summary_markdown(
        study, [], {}
    )


def test_best_is_strict_json_and_answers_when_the_model_file_is_gone(
    cli_in_process, tmp_path, tiny_space
) -> None:
    out = cli_in_process("run", "--dataset", "digits", "--n-trials", "2", "--space", str(tiny_space), *FAST)
    assert out.returncode == 0, out.stderr
    study = load(tmp_path, "digits")
    # A trial added by hand, with no saved model, whose value is infinite (as a diverged one can be).
    donor = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(value=math.inf, params=donor.params, distributions=donor.distributions)
    )
    out = cli_in_process("best", "--study", "digits")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "optuna-rnn: warning: trial 2 has no saved model\n"
    best = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert best["trial_number"] == 2 and best["validation_value"] is None and best["test_metric"] is None
    assert best["metric"] == "accuracy" and best["params"] == donor.params
    assert best["hyperparams"]["hidden_size"] == donor.params["hidden_size"]
    # A trial refused as surplus (a worker asked after the total was reached) is no failure.
    surplus = {"stop_reason": "surplus: 3 trials were already finished or running"}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=surplus))
    out = cli_in_process(
        "run", "--study", "digits", "--n-trials", "3", "-q"
    )  # nothing left: the summary only
    assert out.returncode == 0, out.stderr
    assert "Study 'digits': 3 complete, 0 pruned, 0 failed (this run" in out.stdout
    study = load(tmp_path, "digits")  # so say the dashboard's note and the report's summary.md
    assert "| complete | pruned | failed | running |" in study_note(study)
    assert "| 3 | 0 | 0 | 0 |" in study_note(study)
    # in the note's words and order (the report used Optuna's enum names and order)
    assert "| complete | pruned | failed | running | waiting |\n| ---: " in summary_markdown(study, [], {})
    assert "| 3 | 0 | 0 | 0 | 0 |" in summary_markdown(study, [], {})
    assert "Best trial #2: validation accuracy inf" in out.stdout
    # Always answering the most frequent training class: digits' classes are near balanced.
    data = load_dataset("digits")
    majority = int(np.bincount(data.train.y.numpy()).argmax())
    share = float(np.mean(data.test.y.numpy() == majority))
    assert f"Naive baseline, majority class ({majority}): validation " in out.stdout
    assert f"test {share:.4g}." in out.stdout and 0.09 < share < 0.11
    assert out.stderr == (
        "optuna-rnn: note: study 'digits' already holds 3 finished trials (--n-trials 3 is the study's "
        "total); give a larger --n-trials to run more\n"
        "optuna-rnn: warning: no test metric: trial 2 has no saved model\n"
    )
    out = cli_in_process("best", "--study", "digits", "--export", "best.pt")
    assert (
        out.returncode == 1  # the study lacks the file: not wrong usage (exit 2)
        and out.stderr == "optuna-rnn: error: --export best.pt: trial 2 has no saved model\n"
    )
    assert not (tmp_path / "best.pt").exists()


def test_a_sqlite_url_with_options_is_refused_rather_than_named_after_them(run_cli, tmp_path) -> None:
    out = run_cli("run", "--dataset", "digits", "--storage", "sqlite:///s.db?timeout=30")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "optuna-rnn: error: storage sqlite:///s.db?timeout=30: SQLite URLs take no options; "
        "optuna-rnn sets a 60 s busy timeout itself"
    )
    assert list(tmp_path.iterdir()) == []


def test_input_that_cannot_start_a_study_creates_no_storage_file(cli_in_process, tmp_path) -> None:
    (tmp_path / "window.toml").write_text("window = 500\n")
    in_memory = (
        "an in-memory SQLite database ends with the run: nothing could resume it, show it in the "
        "dashboard or share it with workers; give a file such as sqlite:///optuna-rnn.db"
    )
    cases = [
        (("run", "--study", "digits"), "storage sqlite:///optuna-rnn.db does not exist"),  # a resume
        (("run", "--dataset", "sunspots", "--space", "window.toml"), "too few for window 500"),
        (("run", "--dataset", "digits", "--sampler", "grid"), "the grid over this space has"),
        (("run", "--dataset", "digits", "--storage", "j.log", "--sampler", "grid"), "the grid over"),
        (
            ("best", "--study", "s", "--storage", "sqlite+pysqlite:///s.db"),
            "sqlite+pysqlite:///s.db does not",
        ),
        (("run", "--dataset", "digits", "--storage", "sqlite://"), in_memory),
        (("run", "--dataset", "digits", "--storage", "sqlite:///:memory:", "--workers", "2"), in_memory),
        (("worker", "--study", "digits", "--storage", "sqlite+pysqlite://"), in_memory),
        (("dashboard", "--storage", "sqlite://", "--port", "0"), in_memory),
        (
            ("run", "--dataset", "digits", "--artifacts", "/proc/optuna-rnn"),
            "--artifacts /proc/optuna-rnn: cannot create the directory",
        ),
    ]
    for args, message in cases:
        out = cli_in_process(*args)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
        assert [p.name for p in tmp_path.iterdir()] == ["window.toml"], args
    # read by each trial, yet refused before the study exists, in one process or with workers
    for workers in ("1", "2"):
        out = cli_in_process(
            "run", "--dataset", "digits", "--workers", workers, OPTUNA_RNN_CHECKPOINT_SECONDS="-1"
        )
        assert out.returncode == 2 and out.stderr == (
            "optuna-rnn: error: $OPTUNA_RNN_CHECKPOINT_SECONDS must be >= 0, got -1\n"
        )
        assert [p.name for p in tmp_path.iterdir()] == ["window.toml"]


def test_storage_comes_from_the_environment_unless_given_and_models_go_where_asked(
    cli_in_process, tmp_path, tiny_space
) -> None:
    env = {"OPTUNA_RNN_STORAGE": f"sqlite:///{tmp_path / 'env.db'}"}
    args = ("--space", str(tiny_space), "--n-trials", "2", *FAST)
    out = cli_in_process("run", "--dataset", "digits", "--artifacts", "models", *args, **env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "env.db").exists() and not (tmp_path / "optuna-rnn.db").exists()
    assert not (tmp_path / "optuna-rnn-artifacts").exists() and any((tmp_path / "models").iterdir())
    # best finds the weights through the recorded --artifacts, from another directory
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    best = cli_in_process("best", "--study", "digits", "--export", str(elsewhere / "b.pt"), **env)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["test_metric"] > 0.5 and (elsewhere / "b.pt").exists()
    # --storage overrides the environment
    out = cli_in_process(
        "best", "--study", "digits", "--storage", f"sqlite:///{tmp_path / 'other.db'}", **env
    )
    assert out.returncode == 2 and "other.db does not exist" in out.stderr


def test_a_run_stopped_by_its_timeout_exits_0_and_the_next_run_goes_on(
    cli_in_process, tmp_path, tiny_space
) -> None:
    args = ("run", "--dataset", "digits", "--space", str(tiny_space), "--max-epochs", "2", "-q")
    out = cli_in_process(*args, "--n-trials", "500", "--timeout", "1")
    assert out.returncode == 0, out.stderr
    finished = len(load(tmp_path, "digits").trials)
    assert 1 <= finished < 500  # Optuna starts no trial after the timeout; the one running finishes
    # it says why it stopped short (it looked done)
    assert out.stderr == (
        f"optuna-rnn: note: --timeout 1 s passed, so no new trial started: the study holds {finished} of "
        "its 500 trials; run the same command again to go on\n"
    )
    # a worker's --n-trials becomes the study's total, as a run's does: a later run without one finishes it
    out = cli_in_process("worker", "--study", "digits", "--n-trials", str(finished + 1), "-q")
    assert out.returncode == 0, out.stderr
    out = cli_in_process("run", "--study", "digits", "-q")
    assert (
        out.returncode == 0 and "already holds" in out.stderr and f"--n-trials {finished + 1} " in out.stderr
    )
    out = cli_in_process("run", "--study", "digits", "--n-trials", str(finished + 2), "-q")
    assert out.returncode == 0, out.stderr
    assert len(load(tmp_path, "digits").trials) == finished + 2


def test_a_file_that_is_not_a_journal_is_refused_and_left_as_it_was(cli_in_process, tmp_path) -> None:
    notes = tmp_path / "notes.log"
    notes.write_text("2026-11-27 my training notes\n")
    for args in (("run", "--dataset", "digits"), ("best", "--study", "digits")):
        out = cli_in_process(*args, "--storage", str(notes))
        assert out.returncode == 2
        assert (
            out.stderr
            == f"optuna-rnn: error: storage {notes} is not an Optuna journal file; give a new file name\n"
        )
    assert notes.read_text() == "2026-11-27 my training notes\n"  # Optuna appended its records before


def test_readers_say_at_once_that_a_plain_optuna_study_is_not_theirs(cli_in_process, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    optuna.create_study(study_name="plain", storage=url)
    message = "study 'plain' exists but was not created by optuna-rnn"
    for args in (("best", "--study", "plain"), ("report", "--study", "plain", "--out", "rep")):
        out = cli_in_process(*args)
        assert out.returncode == 2
        assert out.stderr.strip() == f"optuna-rnn: error: {message}"
    # Timed in this process (a CLI's start-up varies with load): a reader does not wait the
    # seconds a run gives another run to record its configuration.
    started = time.monotonic()
    with pytest.raises(UsageError, match=message):
        open_session("plain", storage=url, read_only=True)
    assert time.monotonic() - started < 2.5
    # A worker (which waits for a run to record the configuration) says what to do, not "no study".
    with pytest.raises(UsageError, match="'plain' in sqlite:.* has no optuna-rnn configuration; give it one"):
        open_session("plain", storage=url)


def test_best_of_a_study_without_a_complete_trial_is_an_error_not_a_usage_error(
    cli_in_process, tmp_path, tiny_space
) -> None:
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace

    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(tiny_space)}
    open_session("empty", storage=f"sqlite:///{tmp_path / 'optuna-rnn.db'}", given=given, create=True)
    out = cli_in_process("best", "--study", "empty")
    # The command was right; the study is not there yet (exit 2 is kept for wrong usage).
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == "optuna-rnn: error: study 'empty' has no complete trial yet\n"


def test_bad_input_exits_2_and_leaves_the_study_untouched(
    run_cli, cli_in_process, tmp_path, tiny_space
) -> None:
    assert (
        run_cli("run", "--dataset", "digits", "--n-trials", "2", "--space", str(tiny_space), *FAST).returncode
        == 0
    )
    before = snapshot(load(tmp_path, "digits"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    reversed_space = tmp_path / "reversed.toml"
    reversed_space.write_text("lr = {low = 0.1, high = 0.001, log = true}\n")
    cases = [
        (("run", "--dataset", "nope"), "unknown dataset 'nope'"),
        (("run", "--dataset", "digits", "--space", str(reversed_space)), "lr: empty range"),
        (("run", "--study", "digits", "--space", str(reversed_space)), "lr: empty range"),
        (
            ("run", "--dataset", "digits", "--storage", "postgresql://u:secret@127.0.0.1:1/db"),
            "cannot open storage postgresql://u:***@127.0.0.1:1/db",
        ),
        (("run", "--dataset", "digits", "--sampler", "bayes"), "invalid choice: 'bayes'"),
        (("run", "--dataset", "digits", "--max-epochs", "9"), "study was created with max_epochs=6"),
        (
            ("best", "--study", "missing"),
            "no study named 'missing' in sqlite:///optuna-rnn.db (studies there: digits)",
        ),
        (
            ("run", "--study", "digit"),
            "no study named 'digit' in sqlite:///optuna-rnn.db "
            "(did you mean 'digits'? studies there: digits)",
        ),
        (("run", "--dataset", "digits", "--n-trials", "0"), "--n-trials must be >= 1"),
        (("run", "--dataset", "digits", "--study", "new", "--seed", "-1"), "--seed (seed) must be in [0, 42"),
        (("run", "--dataset", "digits", "--timeout", "-1"), "--timeout must be a positive number of seconds"),
        (("run", "--study", "digits", "--timeout", "nan"), "--timeout must be a positive number of seconds"),
        (("worker", "--study", "digits", "--timeout", "0"), "--timeout must be a positive number of seconds"),
        (("run", "--dataset", "digits", "--study", "new", "--artifacts", str(a_file)), "cannot create"),
        (("best", "--study", "digits", "--export", str(tmp_path / "no" / "best.pt")), "cannot write"),
        (("report", "--study", "digits", "--out", str(a_file)), "cannot write the report"),
        (("dashboard", "--port", "99999"), "--port must be in [0, 65535], got 99999"),
        (
            ("dashboard", "--artifacts", str(tmp_path / "typo")),
            f"--artifacts {tmp_path / 'typo'}: no such folder",
        ),
        (("run", "--data", str(a_file), "--horizon", "0"), "--horizon (horizon) must be >= 1, got 0"),
        (
            ("run", "--dataset", "digits", "--storage", "study.db"),
            "for a SQLite file write sqlite:///study.db",
        ),
        (
            ("run", "--dataset", "digits", "--storage", "sqlite:/study.db"),  # a slash short
            "for a SQLite file write sqlite:///study.db",
        ),
        (
            ("run", "--dataset", "digits", "--storage", f"sqlite:{tmp_path}/study.db"),  # absolute
            f"for a SQLite file write sqlite:///{tmp_path}/study.db",
        ),
        (
            ("best", "--study", "digits", "--export", str(tmp_path)),  # torch's message named its C++ source
            f"--export {tmp_path}: is a folder; give a file name",
        ),
        (
            ("run", "--dataset", "digits", "--storage", "sqlite:///runs/study.db"),
            "storage sqlite:///runs/study.db: folder runs does not exist; create it first",
        ),
        (("run", "--dataset", "digits", "--storage", "runs/study.log"), "folder runs does not exist"),
        (
            ("run", "--dataset", "digits", "--storage", "sqlite:///~/x.db"),
            "'~' is not expanded in storage URLs",
        ),
    ]
    if not torch.cuda.is_available():
        cases.append((("run", "--dataset", "digits", "--device", "cuda"), "no CUDA device is available"))
        cases.append((("worker", "--study", "digits", "--device", "cuda"), "no CUDA device is available"))
    for args, message in cases:
        out = cli_in_process(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr, (message, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr and "secret" not in out.stderr
    assert snapshot(load(tmp_path, "digits")) == before
    # Refused before a storage is opened: no stray database is left for the dashboard to list.
    (tmp_path / "words.csv").write_text("x,y\n" + "a,b\n" * 30)
    (tmp_path / "semi.csv").write_text("date;x;y\n" + "".join(f"2020-01-{d:02d};1;2\n" for d in range(1, 31)))
    refused = {
        ("--data", "semi.csv"): "the header is one column, 'date;x;y': the file looks separated by ';'",
        ("--dataset", "digits", "--max-epochs", "0"): "--max-epochs (max_epochs) must be >= 1",
        ("--data", "typo.csv"): "not found",
        ("--data", "words.csv"): "column 'x' is not numeric",
    }
    for args, message in refused.items():
        out = cli_in_process("run", *args, "--storage", "sqlite:///fresh.db")
        assert out.returncode == 2 and message in out.stderr
        assert not (tmp_path / "fresh.db").exists(), out.stderr


def test_the_commands_run_prints_work_when_pasted_into_a_shell(run_cli, tiny_space) -> None:
    out = run_cli(
        "run",
        "--dataset",
        "digits",
        "--study",
        "my study",
        "--n-trials",
        "1",
        "--space",
        str(tiny_space),
        *FAST,
    )
    assert out.returncode == 0, out.stderr
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("Best model as JSON:")]
    command = shlex.split(line.split(":", 1)[1])
    assert command[:4] == ["optuna-rnn", "best", "--study", "my study"]
    best = run_cli(*command[1:])
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["study"] == "my study"


def test_a_command_run_in_process_leaves_signals_and_logging_as_they_were(capsys) -> None:
    from optuna_rnn.cli import main

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        assert main(["datasets"]) == 0
        assert "digits" in capsys.readouterr().out
        assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # Ctrl-C works again
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--dataset", "digits", "--storage", ""),  # `--storage "$DB"` with DB unset
        ("run", "--dataset", "digits", "--study", ""),
        ("run", "--dataset", "digits", "--study", "  "),  # a name of blanks made study ' '
        ("run", "--dataset", "digits", "--artifacts", ""),
        ("best", "--study", "digits", "--export", ""),
        ("report", "--study", "digits", "--out", ""),
    ],
    ids=lambda args: args[-2],
)
def test_an_empty_option_is_refused_not_taken_for_the_default(cli_in_process, tmp_path, args) -> None:
    out = cli_in_process(*args)
    assert out.returncode == 2
    assert out.stderr.strip() == f"optuna-rnn: error: {args[-2]} must not be empty"
    assert list(tmp_path.iterdir()) == []  # no default database, no report in the working directory


def test_an_empty_storage_variable_is_refused_not_taken_for_the_default(cli_in_process, tmp_path) -> None:
    out = cli_in_process(
        "best", "--study", "digits", OPTUNA_RNN_STORAGE=" "
    )  # OPTUNA_RNN_STORAGE=$DB, DB unset
    assert out.returncode == 2
    assert out.stderr == (
        "optuna-rnn: error: $OPTUNA_RNN_STORAGE is set but empty; unset it for the default sqlite:///optuna-rnn.db\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_study_script_names_itself_and_keeps_its_dataset() -> None:
    script = str(Path(__file__).parent.parent / "studies" / "sunspots.py")
    version = subprocess.run(
        [sys.executable, script, "--version"], capture_output=True, text=True, env=cli_env()
    )
    assert version.returncode == 0 and version.stdout.startswith("optuna-rnn ")
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=cli_env())
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("studies/sunspots.py runs `optuna-rnn run --dataset sunspots`")
    assert "usage: python studies/sunspots.py [-h] [--study NAME]" in helped.stdout
    assert "--n-trials N" in helped.stdout  # the data options it fixes are not offered
    assert not any(
        option in helped.stdout for option in ("--data ", "--dataset NAME", "--target", "--horizon")
    )
    other = subprocess.run(
        [sys.executable, script, "--dataset=digits"], capture_output=True, text=True, env=cli_env()
    )
    assert other.returncode == 2
    assert other.stderr.strip() == (
        "studies/sunspots.py: error: this script tunes on 'sunspots'; for other data use optuna-rnn run"
    )
    # an abbreviation of --dataset must not slip past that check and tune digits
    abbreviated = subprocess.run(
        [sys.executable, script, "--datas", "digits", "--n-trials", "1"],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert abbreviated.returncode == 2 and abbreviated.stderr.strip() == (
        "python studies/sunspots.py: error: unrecognized arguments: --datas digits"
    )


def test_a_rerun_with_nothing_left_to_do_publishes_the_dashboard_note(
    cli_in_process, tmp_path, tiny_space
) -> None:
    # A stop at the very end of a run (after its last trial) skips the closing update; the next
    # run, with nothing to train, must still bring the note up to date.
    args = ("run", "--dataset", "digits", "--n-trials", "2", "--space", str(tiny_space), *FAST)
    assert cli_in_process(*args).returncode == 0
    study = load(tmp_path, "digits")
    save_note(study, "stale")
    assert cli_in_process(*args).returncode == 0
    note = get_note(load(tmp_path, "digits"))
    assert note != "stale" and "sampler: **tpe**" in note


@pytest.mark.parametrize("command", ["report", "best"])
def test_a_command_other_than_run_stopped_by_ctrl_c_exits_130(cli_in_process, monkeypatch, command) -> None:
    from optuna_rnn import cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt  # as Ctrl-C halfway through writing the report or the export

    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    out = cli_in_process(command, "--study", "s", *(("--out", "r") if command == "report" else ()))
    assert out.returncode == 130  # its output is incomplete: a script must not carry on
    assert out.stderr.strip() == "optuna-rnn: interrupted"


def test_an_interrupt_before_any_trial_says_there_is_nothing_to_resume(
    cli_in_process, tmp_path, monkeypatch
) -> None:
    from optuna_rnn import datasets

    def interrupted_while_loading(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.DatasetSpec, "load", interrupted_while_loading)
    out = cli_in_process("run", "--dataset", "digits", "--n-trials", "2")
    assert out.returncode == 0  # it claimed to have closed a running trial, with no study made
    assert out.stderr == "\noptuna-rnn: interrupted before any trial started; nothing to resume\n"


def test_an_interrupt_while_wrapping_up_says_no_trial_was_running(
    cli_in_process, tmp_path, tiny_space, monkeypatch
) -> None:
    from optuna_rnn import recovery
    from optuna_rnn.study import StudySession

    def interrupted_while_scoring(self: StudySession) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(recovery, "_MARKED", [])  # what this process's other tests interrupted
    monkeypatch.setattr(StudySession, "best_test", interrupted_while_scoring)
    out = cli_in_process("run", "--dataset", "digits", "--space", str(tiny_space), "--n-trials", "1", *FAST)
    assert out.returncode == 0
    assert out.stderr.endswith(
        "optuna-rnn: interrupted; no trial was running. Run the same command again to go on.\n"
    )  # it said the running trial was closed as FAIL, of a COMPLETE one
    assert [t.state for t in load(tmp_path, "digits").trials] == [TrialState.COMPLETE]


def test_a_bare_command_prints_its_usage(run_cli) -> None:
    out = run_cli()
    assert out.returncode == 2  # it said 'the following arguments are required: command', no usage
    assert (
        out.stderr.startswith("usage: optuna-rnn")
        and "{datasets,run,worker,best,dashboard,report}" in out.stderr
    )
