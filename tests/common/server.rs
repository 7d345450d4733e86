//! Running the real `palisade` binary (added with the HTTP tests).
