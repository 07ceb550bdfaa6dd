"""Rebuilds gemma_tasks/data/*.jsonl.gz from the raw corpora (run by maintainers, not at run time).

    python tools/build_embedded_data.py --raw_dir ../shared/data

Splits are deterministic functions of stable keys (a SHA-256 of the key), so re-running gives
byte-identical files:
  * LibreOffice help: split BY HELP FILE (the part of `id` before '#'): no file is in two splits.
  * TriviaQA-open: the official dev split -> train/validation (by question), test -> test.
  * bsdgames quiz: by question; Python-docs prose is copied as it is.
  * gettext pairs: copied, except those whose English is a paragraph of the LibreOffice
    validation or test split (the LibreOffice UI catalog shares ~10% of those paragraphs, e.g.
    extended tips: a model trained on gettext would otherwise have seen their translations).
"""
import argparse
import collections
import gzip
import hashlib
import io
import json
import os

OUT_DIR = os.path.join(os.path.dirname(__file__), "..", "gemma_tasks", "data")


def bucket(key: str) -> int:
  """A stable number in [0, 1000) for `key`."""
  return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 1000


def read_jsonl(path):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def same_text(text: str) -> str:
  """`text` with its whitespace collapsed: the key under which two strings are the same text."""
  return " ".join(text.split())


def write_gz(path, text: str):
  # mtime=0 and no file name in the header: the output depends only on its content.
  buf = io.BytesIO()
  with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
    f.write(text.encode("utf-8"))
  with open(path, "wb") as f:
    f.write(buf.getvalue())


def write_jsonl(path, rows):
  write_gz(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return len(rows)


def split_rows(rows, key_fn, val_permille, test_permille):
  splits = collections.defaultdict(list)
  for r in rows:
    b = bucket(key_fn(r))
    name = "test" if b < test_permille else (
        "validation" if b < test_permille + val_permille else "train")
    splits[name].append(r)
  return splits


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--raw_dir", required=True)
  args = p.parse_args()
  os.makedirs(OUT_DIR, exist_ok=True)
  counts = {}

  lo = read_jsonl(os.path.join(args.raw_dir, "libreoffice_help_en_de.jsonl.gz"))
  splits = split_rows(lo, lambda r: r["id"].split("#")[0], val_permille=50, test_permille=50)
  for name, rows in splits.items():
    counts[f"libreoffice_en_de.{name}"] = write_jsonl(
        os.path.join(OUT_DIR, f"libreoffice_en_de.{name}.jsonl.gz"), rows)
  files = {n: {r["id"].split("#")[0] for r in rows} for n, rows in splits.items()}
  assert not (files["train"] & files["validation"] or files["train"] & files["test"]
              or files["validation"] & files["test"])
  counts.update({f"libreoffice_en_de.{n}.help_files": len(f) for n, f in files.items()})

  dev = read_jsonl(os.path.join(args.raw_dir, "qa_trivia_dev.jsonl.gz"))
  dsplit = split_rows(dev, lambda r: r["question"], val_permille=150, test_permille=0)
  counts["trivia_qa_open.train"] = write_jsonl(os.path.join(OUT_DIR, "trivia_qa_open.train.jsonl.gz"), dsplit["train"])
  counts["trivia_qa_open.validation"] = write_jsonl(
      os.path.join(OUT_DIR, "trivia_qa_open.validation.jsonl.gz"), dsplit["validation"])
  test = read_jsonl(os.path.join(args.raw_dir, "qa_trivia_test.jsonl.gz"))
  counts["trivia_qa_open.test"] = write_jsonl(os.path.join(OUT_DIR, "trivia_qa_open.test.jsonl.gz"), test)

  quiz = read_jsonl(os.path.join(args.raw_dir, "qa_bsdgames_quiz.jsonl.gz"))
  qsplit = split_rows(quiz, lambda r: r["question"], val_permille=100, test_permille=100)
  for name, rows in qsplit.items():
    counts[f"quiz_qa.{name}"] = write_jsonl(os.path.join(OUT_DIR, f"quiz_qa.{name}.jsonl.gz"), rows)

  gettext = read_jsonl(os.path.join(args.raw_dir, "gettext_en_de_sentences.jsonl.gz"))
  evaluated = {same_text(r["en"]) for n in ("validation", "test") for r in splits[n]}
  gettext = [r for r in gettext if same_text(r["en"]) not in evaluated]
  counts["gettext_en_de.train"] = write_jsonl(os.path.join(OUT_DIR, "gettext_en_de.train.jsonl.gz"), gettext)

  with gzip.open(os.path.join(args.raw_dir, "python_docs_prose.txt.gz"), "rt", encoding="utf-8") as f:
    prose = f.read()
  # Paragraphs (blank-line separated) -> JSONL {"text": ...}; split by paragraph hash.
  paras = [p.strip() for p in prose.split("\n\n") if p.strip()]
  psplit = split_rows([{"text": p} for p in paras], lambda r: r["text"], val_permille=20, test_permille=20)
  for name, rows in psplit.items():
    counts[f"python_docs.{name}"] = write_jsonl(os.path.join(OUT_DIR, f"python_docs.{name}.jsonl.gz"), rows)

  sizes_path = os.path.join(OUT_DIR, "split_sizes.json")
  with open(sizes_path) as f:   # keeps the entries of files other tools write (extract_ui_pairs)
    sizes = {**json.load(f), **counts}
  with open(sizes_path, "w") as f:
    json.dump(dict(sorted(sizes.items())), f, indent=1)
    f.write("\n")
  print(json.dumps(dict(sorted(counts.items())), indent=1))


if __name__ == "__main__":
  main()
