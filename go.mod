module github.com/gwelb/gwelb

go 1.26.8

require github.com/coder/websocket v1.8.15

require gopkg.in/yaml.v3 v3.0.1
