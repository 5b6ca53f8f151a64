"""A job submitted from this kernel says how it ended: one line in the submitting cell, and one
POST to general.notify-webhook (a real loopback http.server), with no secret in the body."""
from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import xt_magic as xt
from xt_magic.core import api
from xt_magic.core.jobs import notify


@pytest.fixture
def hook_server():
    """(url, received bodies, set status) of a loopback server taking POSTs."""
    got, status = [], [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook?token=SECRET-7c1d", got, status
    server.shutdown()


@pytest.fixture
def lines():
    said = []
    notify.watchers.clear()  # job ids start again at job1 in each test's store
    notify.set_announcer(lambda job: said.append)
    yield said
    notify.set_announcer(None)


def test_webhook_gets_one_post_with_state_and_counts(hook_server, lines):
    url, got, _ = hook_server
    xt.config("general.notify-webhook", url)
    job = api.run_cell("import sys\nif k == 2:\n    sys.exit('no')\n", {}, hp={"k": [1, 2]},
                       name="hooked")
    notify.watchers[job.id].join(60)
    assert len(got) == 1
    path, body = got[0]
    assert path == "/hook?token=SECRET-7c1d"
    data = json.loads(body)
    assert data == {"job": job.id, "name": "hooked", "target": "local", "workspace": "ws1",
                    "state": "failed", "counts": {"completed": 1, "failed": 1}, "runs": 2}
    assert b"SECRET" not in body and b"127.0.0.1" not in body
    assert lines == [f"[xt] {job.id} 'hooked' ended: failed (1 completed, 1 failed) after "
                     + lines[0].rsplit(" ", 1)[1]]


def test_a_failing_webhook_is_said_without_its_url(hook_server, lines):
    url, got, status = hook_server
    status[0] = 500
    xt.config("general.notify-webhook", url)
    job = api.run_cell("x = 1\n", {})
    notify.watchers[job.id].join(60)
    assert len(got) == 1 and len(lines) == 1
    assert lines[0].endswith("(notify-webhook failed: HTTP 500)") and "SECRET" not in lines[0]


def test_no_watcher_without_an_audience_and_none_for_a_waiting_caller(lines, hook_server):
    job = api.run_cell("x = 1\n", {}, wait=True)
    assert job.id not in notify.watchers  # --wait shows the end itself; no webhook set
    notify.set_announcer(None)
    job = api.run_cell("x = 1\n", {})
    assert job.id not in notify.watchers  # a plain script: nobody to tell


def test_the_submitting_cell_shows_the_end_line_in_a_notebook(tmp_path):
    """In a real kernel (nbclient): the %%xt_run cell's output gets the line when the job ends,
    while a later cell runs."""
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext xt_magic"),
                nbformat.v4.new_code_cell("%%xt_run --name quick\nx = 1\n"),
                nbformat.v4.new_code_cell("from xt_magic.core.jobs import notify\n"
                                          "notify.watchers[_.id].join(60)")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        NotebookClient(nb, kernel_name="python3", timeout=120,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    notes = [o for o in nb.cells[1].outputs if o.output_type == "display_data"]
    assert len(notes) == 1
    text = notes[0].data["text/plain"]
    assert text.startswith("[xt] job1 'quick' ended: completed (1 completed) after 0:0")
    assert "ended" in notes[0].data["text/html"]
