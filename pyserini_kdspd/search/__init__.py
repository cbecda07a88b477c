"""Lexical baselines: per-language BM25 with the right Lucene analyzer, and query translation (SMT, NMT, human)."""
from .analyzers import SPECS, AnalyzerSpec, analyze
from .bm25 import build_index, search, weighted_query

__all__ = ["SPECS", "AnalyzerSpec", "analyze", "build_index", "search", "weighted_query"]
