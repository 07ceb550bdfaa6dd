"""tools/extract_help_pairs.py and demo.heldout_help: held-out LibreOffice help files as a user's
task, on help pages written here in the packages' HTML layout."""
import gzip
import importlib
import json
import sys

import pytest

EN_PAGE = """<html><body>
<h1 id="hd_id1" dir="auto">Zebra Bar</h1>
<p id="par_id2" class="paragraph">Use the shortcut <span class="keycode">Ctrl</span>
   + F to open <a href="x.html">the bar</a>.</p>
<p id="par_id3">Parameters:</p>
<p id="par_id4">Text only in English</p>
<p id="par_id5">LoadDialog</p>
<div><p>no id, not a paragraph of the pairs</p></div>
<p id="par_id6"><img src="i.svg" alt="icon">Zebra Next Icon</p>
<p id="par_id7">Syntax error in SQL statement</p>
</body></html>"""
DE_PAGE = """<html><body>
<h1 id="hd_id1" dir="auto">Zebraleiste</h1>
<p id="par_id2" class="paragraph">Verwenden Sie <span class="keycode">Strg</span>
   + F, um <a href="x.html">die Leiste</a> zu öffnen.</p>
<p id="par_id3">Parameter:</p>
<p id="par_id5">LoadDialog</p>
<p id="par_id6"><img src="i.svg" alt="Symbol">Nächstes Zebra</p>
<p id="par_id7">Syntaxfehler im SQL-Ausdruck</p>
</body></html>"""


def _help_dir(tmp_path, rel="text/shared/new_page.html"):
  for lang, page in (("en-US", EN_PAGE), ("de", DE_PAGE)):
    path = tmp_path / "help" / lang / rel
    path.parent.mkdir(parents=True)
    path.write_text(page, encoding="utf-8")
  return str(tmp_path / "help")


def test_pairs_are_aligned_by_paragraph_id_with_tags_stripped(tmp_path, load_tool):
  tool = load_tool("extract_help_pairs")
  rows = tool.pairs(_help_dir(tmp_path), "text/shared/new_page.html")
  assert rows == [
      {"id": "text/shared/new_page.html#hd_id1", "en": "Zebra Bar", "de": "Zebraleiste"},
      {"id": "text/shared/new_page.html#par_id2",
       "en": "Use the shortcut Ctrl + F to open the bar.",
       "de": "Verwenden Sie Strg + F, um die Leiste zu öffnen."},
      {"id": "text/shared/new_page.html#par_id3", "en": "Parameters:", "de": "Parameter:"},
      {"id": "text/shared/new_page.html#par_id5", "en": "LoadDialog", "de": "LoadDialog"},
      {"id": "text/shared/new_page.html#par_id6", "en": "Zebra Next Icon", "de": "Nächstes Zebra"},
      {"id": "text/shared/new_page.html#par_id7", "en": "Syntax error in SQL statement",
       "de": "Syntaxfehler im SQL-Ausdruck"}]


def test_held_out_file_leaves_out_what_the_embedded_data_has(tmp_path, capsys, load_tool):
  tool = load_tool("extract_help_pairs")
  out = tmp_path / "heldout.jsonl.gz"
  assert tool.main(["--help_dir", _help_dir(tmp_path), "--out", str(out)]) == 0
  with gzip.open(out, "rt", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  # "Parameters:" is in the embedded LibreOffice pairs, "Syntax error in SQL statement" a gettext
  # message of the embedded data; "LoadDialog" is the same in both languages.
  assert "Parameters:" in {r["en"] for r in tool.embedded_pairs()}
  assert "Syntax error in SQL statement" in tool.embedded_gettext_sources()
  assert [r["id"].split("#")[1] for r in rows] == ["hd_id1", "par_id2", "par_id6"]
  assert "pairs from 1 help files not in the embedded data" in capsys.readouterr().out


def test_user_module_registers_the_held_out_task(tmp_path, monkeypatch, temp_task_names):
  import seqio  # noqa: PLC0415
  monkeypatch.delenv("LIBREOFFICE_HELDOUT", raising=False)
  sys.modules.pop("demo.heldout_help", None)
  with pytest.raises(RuntimeError, match="set LIBREOFFICE_HELDOUT"):
    importlib.import_module("demo.heldout_help")
  path = tmp_path / "pairs.jsonl.gz"
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(json.dumps({"id": "a.html#p1", "en": "Find Bar", "de": "Suchleiste"}) + "\n")
  monkeypatch.setenv("LIBREOFFICE_HELDOUT", str(path))
  sys.modules.pop("demo.heldout_help", None)
  module = importlib.import_module("demo.heldout_help")
  temp_task_names.append(module.TASK)
  task = seqio.get_mixture_or_task(module.TASK)
  (ex,) = task.get_dataset({"inputs": 64, "targets": 32}, split="test", shuffle=False)
  assert ex["source"].numpy() == b"Find Bar" and ex["target"].numpy() == b"Suchleiste"
  assert ex["inputs_pretokenized"].numpy().decode().endswith(
      "Translate English to German: Find Bar<end_of_turn>\n<start_of_turn>model\n")
