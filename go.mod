module github.com/shareless/shareless

go 1.26
