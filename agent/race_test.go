//go:build race

package agent

// raceBuild makes the end-to-end tests build the agent binary with the
// race detector when they run under it themselves.
const raceBuild = true
