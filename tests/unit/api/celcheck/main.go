// celcheck: validate a CRD as the apiserver does (structural schema, CEL compilation and cost
// limits), then decide create/update cases with defaulting, OpenAPI validation and CEL.
// Build: go build -C tests/unit/api/celcheck -o /tmp/celcheck . ; then
// COGWORK_CELCHECK=/tmp/celcheck pytest tests/unit/api
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	json "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

type testCase struct {
	Name   string                 `json:"name"`
	Old    map[string]interface{} `json:"old"`
	New    map[string]interface{} `json:"new"`
	Expect []string               `json:"expect"` // substrings; empty = must be valid
}

func main() {
	raw, err := os.ReadFile(os.Args[1])
	must(err)
	var v1crd apiextensionsv1.CustomResourceDefinition
	must(yaml.UnmarshalStrict(raw, &v1crd))
	apiextensionsv1.SetObjectDefaults_CustomResourceDefinition(&v1crd)
	var crd apiextensions.CustomResourceDefinition
	must(apiextensionsv1.Convert_v1_CustomResourceDefinition_To_apiextensions_CustomResourceDefinition(&v1crd, &crd, nil))
	ctx := context.Background()
	if errs := crdvalidation.ValidateCustomResourceDefinition(ctx, &crd); len(errs) > 0 {
		for _, e := range errs {
			fmt.Println("CRD INVALID:", e)
		}
		os.Exit(1)
	}
	fmt.Println("CRD valid")
	if len(os.Args) < 3 {
		return
	}
	var props *apiextensions.JSONSchemaProps
	if crd.Spec.Validation != nil { // internal form hoists a schema shared by all versions
		props = crd.Spec.Validation.OpenAPIV3Schema
	} else {
		props = crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	}
	ss, err := structuralschema.NewStructural(props)
	must(err)
	validator, _, err := apiservervalidation.NewSchemaValidator(props)
	must(err)
	celv := cel.NewValidator(ss, true, celconfig.PerCallLimit)
	casesRaw, err := os.ReadFile(os.Args[2])
	must(err)
	var cases []testCase
	must(json.Unmarshal(casesRaw, &cases))
	failed := 0
	for _, c := range cases {
		structuraldefaulting.Default(c.New, ss)
		var errs field.ErrorList
		var old interface{}
		if c.Old != nil {
			structuraldefaulting.Default(c.Old, ss)
			old = c.Old
			errs = append(errs, apiservervalidation.ValidateCustomResourceUpdate(nil, c.New, c.Old, validator)...)
		} else {
			errs = append(errs, apiservervalidation.ValidateCustomResource(nil, c.New, validator)...)
		}
		celErrs, _ := celv.Validate(ctx, nil, ss, c.New, old, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
		text := errs.ToAggregate()
		got := ""
		if text != nil {
			got = text.Error()
		}
		ok := true
		if len(c.Expect) == 0 && got != "" {
			ok = false
		}
		for _, want := range c.Expect {
			if !strings.Contains(got, want) {
				ok = false
			}
		}
		if len(c.Expect) > 0 && got == "" {
			ok = false
		}
		status := "ok  "
		if !ok {
			status = "FAIL"
			failed++
		}
		fmt.Printf("%s %s\n     -> %s\n", status, c.Name, got)
	}
	if failed > 0 {
		fmt.Printf("%d case(s) failed\n", failed)
		os.Exit(1)
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
