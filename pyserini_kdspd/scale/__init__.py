"""Encoding that scales out: Ray Data workers writing Parquet vectors (Ray is the optional extra ``ray``).

``python -m pyserini_kdspd.scale.ray_encode`` (:mod:`.ray_encode`) reads a JsonCollection or a
Parquet corpus, encodes it on a pool of Ray actors that each load the encoder once, and writes
Parquet vectors (``docid``, ``vector``, ``lang``) that :mod:`pyserini_kdspd.index` turns into FAISS
and Lucene indexes. Nothing here imports Ray until a command runs.
"""
