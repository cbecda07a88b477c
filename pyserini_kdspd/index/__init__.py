"""The stage between encoding and search: encoded documents as Parquet and Anserini JSON vectors
(``vectors``), and Lucene flat / HNSW dense indexes built by Anserini (``lucene``).
``python -m pyserini_kdspd.index`` converts and builds; its ``search`` subcommand writes TREC runs."""
from .lucene import build as build_lucene, index_meta, num_docs
from .vectors import (Vectors, arrow_table, read_faiss, read_json_vectors, read_vectors, with_langs,
                      write_json_vectors, write_parquet)

__all__ = ["Vectors", "arrow_table", "build_lucene", "index_meta", "num_docs", "read_faiss", "read_json_vectors",
           "read_vectors", "with_langs", "write_json_vectors", "write_parquet"]
