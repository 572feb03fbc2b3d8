//! Plain counters the shell renders on /metrics under vminsert's names.
