//go:build !race

package agent

const raceBuild = false
