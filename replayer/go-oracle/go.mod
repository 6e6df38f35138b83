module allocscope/go-oracle

go 1.22
