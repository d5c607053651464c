module github.com/shareless/shareless

go 1.26

require github.com/gophercloud/gophercloud/v2 v2.15.0
