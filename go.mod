module github.com/shareless/shareless

go 1.26

require (
	github.com/gophercloud/gophercloud/v2 v2.15.0
	github.com/rabbitmq/amqp091-go v1.16.0
	gopkg.in/ini.v1 v1.67.3
)

require gopkg.in/yaml.v2 v2.4.0 // indirect
