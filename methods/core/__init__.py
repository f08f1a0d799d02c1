"""The machinery that pruning methods share: the interface, the registry, the selection
rules, proxy training with recording, exact per-example gradient norms, features, kNN
graphs and greedy orders. Each module of the parent package `methods` is one method."""
