//go:build !race

package replicator

const raceBuild = false
