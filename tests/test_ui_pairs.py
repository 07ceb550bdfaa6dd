"""tools/extract_ui_pairs.py and the embedded LibreOffice UI strings it writes."""
import doctest
import gzip
import json
import os
import struct

from gemma_tasks import sources


def write_mo(path, messages):
  """A GNU .mo catalog of {msgid: msgstr} (msgid "" is the header), as msgfmt writes it."""
  keys = sorted(messages)
  ids = [k.encode("utf-8") for k in keys]
  strs = [messages[k].encode("utf-8") for k in keys]
  n = len(keys)
  table_start = 28
  data_start = table_start + 16 * n
  id_table, str_table, data = [], [], b""
  for blob in ids:
    id_table.append((len(blob), data_start + len(data)))
    data += blob + b"\0"
  for blob in strs:
    str_table.append((len(blob), data_start + len(data)))
    data += blob + b"\0"
  header = struct.pack("<7I", 0x950412DE, 0, n, table_start, table_start + 8 * n, 0, 0)
  tables = b"".join(struct.pack("<2I", *entry) for entry in id_table + str_table)
  with open(path, "wb") as f:
    f.write(header + tables + data)


def test_ui_strings_lose_mnemonics_and_what_the_embedded_data_has(tmp_path, load_tool):
  tool = load_tool("extract_ui_pairs")
  header = {"": "Content-Type: text/plain; charset=UTF-8\n"}
  write_mo(tmp_path / "cui.mo", {
      **header,
      "menu|insert\x04_Insert": "_Einfügen",
      "menu|format\x04F_ormat": "_Format",                            # the same on screen
      "RID_CHECK\x04~Check": "~Aktivieren",
      "label\x04Zoom  Factor": "Vergrößerungsfaktor",
      "same\x04PDF": "PDF",                                          # German = English
      "err\x04Syntax error in SQL statement": "Syntaxfehler",        # an embedded gettext pair
      "hd\x04Expert Configuration": "Experteneinstellungen",        # a LibreOffice test heading
  })
  write_mo(tmp_path / "sw.mo", {**header, "dup\x04Check": "Prüfen"})           # first German is kept
  assert tool.ui_pairs(str(tmp_path)) == [
      {"en": "Check", "de": "Aktivieren", "src": "cui.mo"},
      {"en": "Zoom Factor", "de": "Vergrößerungsfaktor", "src": "cui.mo"},
      {"en": "Insert", "de": "Einfügen", "src": "cui.mo"},
  ]


def test_embedded_ui_strings_are_unseen_by_the_evaluated_splits():
  def english(name):
    with gzip.open(os.path.join(sources.DATA_DIR, f"{name}.jsonl.gz"), "rt",
                   encoding="utf-8") as f:
      return [" ".join(json.loads(line)["en"].split()) for line in f]
  ui = english("libreoffice_ui_en_de.train")
  with open(os.path.join(sources.DATA_DIR, "split_sizes.json"), encoding="utf-8") as f:
    assert len(ui) == json.load(f)["libreoffice_ui_en_de.train"] == len(set(ui))
  for other in ("libreoffice_en_de.validation", "libreoffice_en_de.test", "gettext_en_de.train"):
    assert not set(ui) & set(english(other)), other
  assert {"Insert", "Character...", "Decimal places:"} <= set(ui)
