//go:build race

package replicator

// raceBuild: the race detector slows TestModel about eightfold; it runs
// fewer cases by default.
const raceBuild = true
