module github.com/vestibule-mdm/vestibule/tools/openbao

go 1.26.8
