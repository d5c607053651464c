module github.com/shareless/shareless

go 1.26

require (
	github.com/digitalocean/go-libvirt v0.0.0-20261013170128-efbbdf578ac8
	github.com/gophercloud/gophercloud/v2 v2.15.0
	github.com/rabbitmq/amqp091-go v1.16.0
	golang.org/x/sys v0.47.0
	gopkg.in/ini.v1 v1.67.3
)

require golang.org/x/crypto v0.55.0 // indirect

require gopkg.in/yaml.v2 v2.4.0 // indirect
