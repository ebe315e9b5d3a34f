"""The corpus: normalizations, the held-out split, bad files, the atomic download."""

from __future__ import annotations

import http.server
import threading

import pytest

from model import corpus
from model.vocab import Vocab


def test_nfc_keeps_accents_and_enye(corpus_path):
    text = corpus.read(corpus_path)
    assert len(text) == 1_018_041
    assert len(set(text)) == 96
    assert "añadidura" in text and "anadidura" not in text


def test_strip_accents_reproduces_the_notebook(corpus_path):
    text = corpus.read(corpus_path, strip_accents=True)
    assert len(set(text)) == 85
    assert len(Vocab.from_text(text)) == 86  # with the id for unknown characters
    assert "anadidura" in text and "ñ" not in text


def test_held_out_is_the_last_tenth():
    train, held_out = corpus.split("a" * 90 + "b" * 10)
    assert train == "a" * 90 and held_out == "b" * 10


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"   \n\n", "empty"), (b"Sancho \xff\xfe dijo", "not UTF-8")],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.read(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(corpus.CorpusError, match="no such file"):
        corpus.read(tmp_path / "nothing.txt")
    with pytest.raises(corpus.CorpusError, match="folder"):
        corpus.read(tmp_path)


def test_no_corpus_anywhere_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CERVANTES_CACHE", str(tmp_path))
    with pytest.raises(corpus.CorpusError, match="--corpus PATH"):
        corpus.resolve(None)


def test_download_without_network_leaves_nothing(tmp_path):
    dest = tmp_path / "cache" / "el_quijote.txt"
    # port 9 on loopback: nothing listens, the connection is refused at once
    with pytest.raises(corpus.CorpusError, match="--corpus PATH"):
        corpus.download(dest, url="http://127.0.0.1:9/el_quijote.txt", timeout=5)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_writes_the_file(tmp_path):
    body = "En un lugar de la Mancha\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = corpus.download(tmp_path / "q.txt", url=f"http://127.0.0.1:{server.server_port}/q.txt")
    finally:
        server.shutdown()
    assert dest.read_bytes() == body
    assert [p.name for p in tmp_path.iterdir()] == ["q.txt"]  # no temporary file left behind
