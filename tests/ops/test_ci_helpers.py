"""The small commands the pipeline runs: the CI AWS profile and the merge request preview note."""

from __future__ import annotations

import configparser
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ops import ci_aws_profile, preview_note

PREVIEW_LOG = """\
Previewing update (qa1):
\x1b[32m+ \x1b[0m aws:lambda:Function demand-processor create
  ~ aws:lambda:Alias live update [diff: ~functionVersion]
Resources:
    + 2 to create
    ~ 1 to update
    27 unchanged
"""


def test_profile_of_the_stack_file_becomes_a_web_identity_profile(tmp_path, monkeypatch):
    config_file = tmp_path / "aws" / "config"
    config_file.parent.mkdir()
    config_file.write_text("[profile other]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::000000000000:role/prd3292-qa1-ci")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/gitlab-oidc-token")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "gitlab-1-2")

    assert ci_aws_profile.main(["qa1", "--config-file", str(config_file)]) == 0

    parser = configparser.ConfigParser()
    parser.read(config_file)
    assert dict(parser["profile tm-nonprod-Ops-Techops"]) == {
        "role_arn": "arn:aws:iam::000000000000:role/prd3292-qa1-ci",
        "web_identity_token_file": "/tmp/gitlab-oidc-token",
        "role_session_name": "gitlab-1-2",
        "region": "us-east-1",
    }
    assert parser["profile other"]["region"] == "eu-west-1"


def test_prod_stack_gets_the_prod_profile_and_a_rewrite_replaces_it(tmp_path, monkeypatch):
    config_file = tmp_path / "config"
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/t")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/old")
    ci_aws_profile.main(["prod1", "--config-file", str(config_file)])
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/new")

    ci_aws_profile.main(["prod1", "--config-file", str(config_file)])

    parser = configparser.ConfigParser()
    parser.read(config_file)
    assert parser.sections() == ["profile tm-prod-Ops-Techops"]
    assert parser["profile tm-prod-Ops-Techops"]["role_arn"].endswith("role/new")


def test_missing_role_is_refused_with_the_variable_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ROLE_ARN", "")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/t")

    assert ci_aws_profile.main(["dev1", "--config-file", str(tmp_path / "config")]) == 2
    assert "DEPLOY_ROLE_ARN_<ACCOUNT>" in capsys.readouterr().err
    assert not (tmp_path / "config").exists()


def test_preview_summary_counts_the_resources_block():
    assert preview_note.summary(PREVIEW_LOG) == {"to create": 2, "to update": 1, "unchanged": 27}


def test_preview_report_is_markdown_without_terminal_colours(tmp_path):
    log = tmp_path / "preview-qa1.txt"
    log.write_text(PREVIEW_LOG)
    output = tmp_path / "reports" / "preview-qa1.md"

    assert preview_note.main(["qa1", str(log), "--status", "failed", "--output", str(output)], environ={}) == 0

    text = output.read_text()
    assert text.startswith("### `pulumi preview --diff` of stack `qa1`: **failed**")
    assert "2 to create, 1 to update, 27 unchanged" in text
    assert "\x1b[" not in text
    assert "```diff\nPreviewing update (qa1):" in text


def test_long_preview_keeps_the_tail():
    text = preview_note.render(
        "prod1", "x" * (preview_note.MAX_LOG_CHARS + 10) + "\nResources:\n    3 unchanged\n", "success"
    )

    assert "characters cut" in text
    assert "3 unchanged" in text
    assert len(text) < preview_note.MAX_LOG_CHARS + 1000


@pytest.fixture
def gitlab_api():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "token": self.headers["PRIVATE-TOKEN"], "body": json.loads(body)})
            self.send_response(201)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/v4", received
    server.shutdown()
    server.server_close()


def test_note_is_posted_on_the_merge_request_when_a_token_is_set(tmp_path, gitlab_api):
    api_url, received = gitlab_api
    log = tmp_path / "preview.txt"
    log.write_text(PREVIEW_LOG)
    environ = {
        "PREVIEW_NOTE_TOKEN": "glpat-test",
        "CI_MERGE_REQUEST_IID": "7",
        "CI_API_V4_URL": api_url,
        "CI_PROJECT_ID": "42",
    }

    assert preview_note.main(["qa1", str(log), "--output", str(tmp_path / "p.md")], environ=environ) == 0

    assert len(received) == 1
    assert received[0]["path"] == "/api/v4/projects/42/merge_requests/7/notes"
    assert received[0]["token"] == "glpat-test"
    assert received[0]["body"]["body"] == (tmp_path / "p.md").read_text()


def test_no_token_means_no_note(tmp_path, gitlab_api):
    _, received = gitlab_api
    environ = {"CI_MERGE_REQUEST_IID": "7", "CI_PROJECT_ID": "42"}

    assert (
        preview_note.main(["qa1", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "p.md")], environ=environ)
        == 0
    )

    assert received == []
    assert "(no preview output)" in (tmp_path / "p.md").read_text()
