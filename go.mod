module github.com/shareless/shareless

go 1.26

require (
	github.com/digitalocean/go-libvirt v0.0.0-20261013170128-efbbdf578ac8
	golang.org/x/sys v0.41.0
)

require golang.org/x/crypto v0.48.0 // indirect
