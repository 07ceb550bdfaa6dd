"""LibreOffice UI strings en->de from the Debian package's gettext catalogs: writes the embedded
`gemma_tasks/data/libreoffice_ui_en_de.train.jsonl.gz` (run by maintainers, not at run time).

    apt-get download libreoffice-l10n-de        # 4:7.4.7-1+deb12u14, the help packages' version
    dpkg-deb -x libreoffice-l10n-de_*.deb x
    python tools/extract_ui_pairs.py --mo_dir x/usr/lib/libreoffice/program/resource/de/LC_MESSAGES

The help text names the UI all the time ("Choose Format - Character", "the Decimal places box"),
and the embedded gettext pairs keep only messages of 4+ words, so menu entries, buttons and box
labels are missing from the training data. This takes every message of the 33 catalogs
(`<context>\\x04<English>` -> German): mnemonic marks removed (`~` anywhere, `_` before a letter
or digit: "F_ormat" -> "Format"), whitespace collapsed, kept when both sides have text and differ;
the first German of an English string is kept (catalogs in name order, messages in key order).
Left out: messages already in the embedded gettext pairs, and messages whose English is a
paragraph of the LibreOffice validation or test split (a model would have seen that paragraph's
translation), as for the gettext pairs. `src` is the catalog (`cui.mo`, `sw.mo`, ...).
"""
import argparse
import gettext
import glob
import gzip
import json
import os
import re
import sys

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "gemma_tasks", "data")
OUT_NAME = "libreoffice_ui_en_de.train"
_MNEMONIC = re.compile(r"_(?=\w)")


def clean(text: str) -> str:
  """A UI string as it reads on screen.

  >>> clean("F_ormat"), clean("~Insert  Rows"), clean("FILE_NAME")
  ('Format', 'Insert Rows', 'FILENAME')
  """
  return " ".join(_MNEMONIC.sub("", text.replace("~", "")).split())


def catalog_pairs(mo_path: str):
  """(English, German) of every translated message of one .mo catalog, in key order."""
  with open(mo_path, "rb") as f:
    catalog = gettext.GNUTranslations(f)._catalog   # pylint: disable=protected-access
  for key in sorted(catalog, key=str):
    german = catalog[key]
    if isinstance(key, tuple) or not key or not isinstance(german, str):
      continue   # plural forms (tuples) and the header ("")
    english = key.split("\x04", 1)[-1]   # drop the message context
    yield clean(english), clean(german)


def _english(name: str) -> set:
  with gzip.open(os.path.join(DATA_DIR, f"{name}.jsonl.gz"), "rt", encoding="utf-8") as f:
    return {" ".join(json.loads(line)["en"].split()) for line in f}


def ui_pairs(mo_dir: str) -> list:
  """The rows of the embedded file (see the module docstring)."""
  files = sorted(glob.glob(os.path.join(mo_dir, "*.mo")))
  if not files:
    raise FileNotFoundError(f"no .mo catalog in {mo_dir}")
  left_out = (_english("gettext_en_de.train") | _english("libreoffice_en_de.validation")
              | _english("libreoffice_en_de.test"))
  seen, rows = set(), []
  for path in files:
    for english, german in catalog_pairs(path):
      if english and german and english != german and english not in seen \
          and english not in left_out:
        seen.add(english)
        rows.append({"en": english, "de": german, "src": os.path.basename(path)})
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--mo_dir", required=True,
                 help="resource/de/LC_MESSAGES of the unpacked libreoffice-l10n-de package")
  args = p.parse_args(argv)
  sys.path.insert(0, os.path.dirname(__file__))
  import build_embedded_data  # pylint: disable=g-import-not-at-top  (its deterministic gzip)
  rows = ui_pairs(args.mo_dir)
  build_embedded_data.write_jsonl(os.path.join(DATA_DIR, f"{OUT_NAME}.jsonl.gz"), rows)
  sizes_path = os.path.join(DATA_DIR, "split_sizes.json")
  with open(sizes_path, encoding="utf-8") as f:
    sizes = json.load(f)
  sizes[OUT_NAME] = len(rows)
  with open(sizes_path, "w", encoding="utf-8") as f:
    json.dump(dict(sorted(sizes.items())), f, indent=1)
    f.write("\n")
  print(f"{len(rows)} UI messages -> {OUT_NAME}.jsonl.gz")
  return 0


if __name__ == "__main__":
  sys.exit(main())
