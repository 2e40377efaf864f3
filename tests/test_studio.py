"""`pegasus studio`: its draws, their cancellation, favourites that their command line remakes
byte for byte, its errors, its signals, and the page driven in a headless Chromium."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pegasus.cli import app
from pegasus.errors import FieldError

pytest.importorskip("starlette")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def guided(run):
    result = CliRunner().invoke(app, ["train-guide", "--run", str(run), "--iters", "2"])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def studio(guided, tmp_path):
    from pegasus.api import load_run
    from pegasus.studio.session import Studio

    return Studio(load_run(guided, device="cpu"), guided, tmp_path / "out", "cpu")


def test_the_pages_fields_are_checked_and_named():
    from pegasus.studio.session import Draw

    classes = ["horse", "bird"]
    draw = Draw.parse({"k": "3", "n": "5", "guidance": "2.5", "seed": "7"}, classes)
    assert (draw.request.k, draw.request.n, draw.request.strips) == (3, 5, 1)
    assert (draw.request.source, draw.request.target, draw.request.guidance) == ("horse", "bird", 2.5)
    # Unguided, a blend names no classes (as `pegasus blend` without --guidance).
    assert Draw.parse({"guidance": "0"}, classes).request.source is None
    hybrid = Draw.parse({"mode": "hybrid", "source": "bird", "target": "horse"}, classes)
    assert (hybrid.request.base, hybrid.request.parts) == ("bird", "horse")
    for fields, name in [({"k": "7", "n": "5"}, "k"), ({"seed": "x"}, "seed"),
                         ({"mode": "morph"}, "mode"), ({"source": "cat"}, "source"),
                         ({"sampler": "euler"}, "sampler"), ({"steps": "0"}, "steps"),
                         ({"guidance": "-1"}, "guidance")]:
        with pytest.raises(FieldError) as caught:
            Draw.parse(fields, classes)
        assert caught.value.field == name


def test_the_command_line_names_every_field_that_shapes_the_picture():
    from pegasus.studio.session import Draw

    draw = Draw.parse({"k": "3", "guidance": "2", "seed": "7", "sampler": "cas", "steps": "6"},
                      ["horse", "bird"])
    words = shlex.split(draw.command(Path("runs/my run"), Path("out/f.png"), "cpu"))
    assert words[:4] == ["pegasus", "blend", "--run", "runs/my run"]
    said = dict(zip(words[4::2], words[5::2], strict=True))
    assert said == {"--k": "3", "--n": "15", "--strips": "1", "--from": "horse", "--to": "bird",
                    "--guidance": "2", "--seed": "7", "--sampler": "cas", "--steps": "6",
                    "--device": "cpu", "--compile": "off", "--out": "out/f.png"}


def test_a_newer_draw_stops_the_one_running_at_its_next_evaluation(studio):
    from pegasus.studio.session import Draw, Superseded

    slow = Draw.parse({"sampler": "als", "steps": "2000"}, studio.classes)
    first, caught = studio.ask(), []

    def running() -> None:
        try:
            studio.draw(first, slow)
        except Superseded as e:
            caught.append(e)

    thread = threading.Thread(target=running)
    thread.start()
    while studio.progress.done == 0 and thread.is_alive():
        time.sleep(0.01)
    studio.ask()  # the page moved on
    thread.join(timeout=30)
    assert not thread.is_alive() and caught
    assert studio.progress.done < studio.progress.total / 2
    # The next draw runs, and a draw asked for again comes back without drawing.
    quick = Draw.parse({"sampler": "als", "steps": "6", "seed": "1"}, studio.classes)
    drawn = studio.draw(studio.ask(), quick)
    assert drawn.strip.startswith(b"\x89PNG") and drawn.chosen.startswith(b"\x89PNG")
    assert studio.draw(studio.ask(), quick) is drawn


def test_a_favourite_is_remade_byte_for_byte_by_its_command_line(studio, tmp_path, monkeypatch):
    from pegasus.studio.session import Draw

    for fields in ({"guidance": "3", "seed": "5", "sampler": "als", "steps": "6", "k": "2"},
                   {"mode": "hybrid", "seed": "2", "sampler": "als", "steps": "6"}):
        saved = studio.favourite(Draw.parse(fields, studio.classes))
        kept = studio.out / saved["name"]
        assert (kept.with_suffix(".txt").read_text().strip() == saved["command"])
        words = shlex.split(saved["command"])
        again = tmp_path / f"again-{fields.get('mode', 'blend')}.png"
        words[words.index("--out") + 1] = str(again)
        result = CliRunner().invoke(app, words[1:])
        assert result.exit_code == 0, result.output
        assert again.read_bytes() == kept.read_bytes()
        if "mode" not in fields:
            strips = "-strips.png"
            assert (Path(str(again)[:-4] + strips).read_bytes()
                    == Path(str(kept)[:-4] + strips).read_bytes())
    # Numbered on: nothing already kept is overwritten, and the tray lists both.
    assert [f["name"] for f in studio.favourites()] == ["favourite-001.png", "favourite-002.png"]
    assert studio.favourite_file("../config.toml") is None
    assert studio.favourite_file("favourite-002.png") == studio.out / "favourite-002.png"


def test_without_the_extra_the_verb_says_how_to_add_it(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = CliRunner().invoke(app, ["studio", "--run", str(run)])
    assert result.exit_code == 2
    assert "pegasus-score[studio]" in result.output and "Traceback" not in result.output


def test_a_taken_port_or_a_folder_that_is_no_run_is_one_line(run, tmp_path):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    result = CliRunner().invoke(app, ["studio", "--run", str(run), "--port", port,
                                      "--out", str(tmp_path / "o")])
    taken.close()
    assert result.exit_code == 2 and f"127.0.0.1:{port}" in result.output, result.output
    result = CliRunner().invoke(app, ["studio", "--run", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2 and "not a run folder" in result.output


def _serve(run: Path, out: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    process = subprocess.Popen([sys.executable, "-m", "pegasus", "studio", "--run", str(run),
                                "--port", "0", "--out", str(out), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    line = process.stdout.readline()
    assert "http://127.0.0.1:" in line, line + process.stdout.read()
    return process, line.split(" at ")[1].split()[0]


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.read().decode()
    except OSError as e:
        return str(e)


@pytest.fixture(scope="module")
def served(guided, tmp_path_factory):
    """One studio process for the page's test and then the signal's (one start-up, not two)."""
    out = tmp_path_factory.mktemp("served")
    process, url = _serve(guided, out)
    yield process, url, out
    process.kill()


@pytest.mark.slow
@pytest.mark.xdist_group("studio-process")
def test_the_page_in_a_browser_redraws_on_a_slider_and_keeps_a_favourite(served, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no Chromium: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    process, url, out = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.body.dataset.drawn !== undefined", timeout=30000)
        first = page.get_attribute("#chosen", "src")
        drawn = page.evaluate("document.body.dataset.drawn")
        page.focus("#seed")
        page.keyboard.press("ArrowRight")  # seed 0 -> 1, as a user moves the slider
        page.wait_for_function(f"document.body.dataset.drawn !== '{drawn}'", timeout=30000)
        assert page.input_value("#seed") == "1"
        assert page.get_attribute("#chosen", "src") != first
        assert page.text_content("#error") == ""
        page.click("#keep")
        page.wait_for_selector("#tray figure code", timeout=30000)
        command = page.text_content("#tray figure code")
        browser.close()
    kept = out / "favourite-001.png"
    words = shlex.split(command)
    assert words[words.index("--out") + 1] == str(kept) and "--seed" in words
    again = tmp_path / "again.png"
    words[words.index("--out") + 1] = str(again)
    result = CliRunner().invoke(app, words[1:])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == kept.read_bytes()


@pytest.mark.xdist_group("studio-process")
def test_sigterm_ends_the_studio_while_a_slow_draw_runs(served):
    """Ctrl-C's SIGINT goes through the same handler (studio/__init__.py)."""
    process, url, _ = served
    try:
        slow = threading.Thread(target=lambda: _get(url + "api/draw?sampler=als&steps=2000"),
                                daemon=True)
        slow.start()
        for _ in range(200):
            if '"done":0' not in _get(url + "api/progress"):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "Traceback" not in process.stdout.read()
    finally:
        process.kill()
